//! A generic controller runtime in the shape of kube-rs's `Controller` (DESIGN §3).
//!
//! A [`Reconciler`] brings one object, named by its key, to the state it should be in and says
//! what it wants next ([`Action`]): to be looked at again after a while, or only when something
//! changes. The [`Controller`] drives it:
//! - keys arrive from a trigger source (any [`Stream`] of keys: a channel, a store watch) and
//!   from a periodic resync of every key ([`Reconciler::list`]);
//! - up to [`Config::workers`] reconciles run at once, never two of one key: a key woken while
//!   its reconcile runs is reconciled once more after it ends, however often it was woken;
//! - a key already waiting to run is not queued twice (wake-ups are deduplicated);
//! - `Ok(Action::Requeue(d))` looks at the key again after `d` (an earlier timer is kept);
//!   `Ok(Action::AwaitChange)` drops its timer;
//! - an error is retried after the delay [`Reconciler::error_policy`] gives for the number of
//!   errors in a row ([`Backoff`] by default: exponential per key, with a cap); a success
//!   resets the count. A reconcile that panics counts as an error.
//!
//! kube-rs's own runtime is bound to Kubernetes objects and its API client, so this is the same
//! shape over plain keys, for controllers of any front end.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::{Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, Stream, StreamExt};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What a reconcile asks for next (kube-rs's `Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reconcile the key again after this long, even if nothing changes.
    Requeue(Duration),
    /// Reconcile the key again only when it is woken (a trigger or the resync).
    AwaitChange,
}

impl Action {
    /// Look again after `after`.
    pub fn requeue(after: Duration) -> Self {
        Action::Requeue(after)
    }

    /// Look again only on a change.
    pub fn await_change() -> Self {
        Action::AwaitChange
    }
}

/// Exponential backoff: the n-th error in a row (n ≥ 1) waits `first * 2^(n-1)`, at most `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first error.
    pub first: Duration,
    /// The longest delay.
    pub cap: Duration,
}

impl Backoff {
    /// 0.4 s after the first error, doubling up to one minute.
    pub const DEFAULT: Backoff = Backoff {
        first: Duration::from_millis(400),
        cap: Duration::from_secs(60),
    };

    /// The delay after `failures` errors in a row (`0` is treated as `1`).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first
            .checked_mul(1u32 << doublings)
            .map_or(self.cap, |d| d.min(self.cap))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::DEFAULT
    }
}

/// Brings the object named by a key to the state it should be in.
pub trait Reconciler: Send + Sync + 'static {
    /// Names one object (e.g. `<cluster>/<service>`).
    type Key: Clone + Eq + Hash + Ord + Debug + Send + Sync + 'static;
    /// Why a reconcile or a listing failed.
    type Error: Display + Send + 'static;

    /// One reconcile of `key`. Never runs twice at once for one key.
    fn reconcile(
        &self,
        key: &Self::Key,
    ) -> impl Future<Output = Result<Action, Self::Error>> + Send;

    /// Every key there is, for the periodic resync.
    fn list(&self) -> impl Future<Output = Result<Vec<Self::Key>, Self::Error>> + Send;

    /// When to retry `key` after its `failures`-th error in a row (≥ 1): [`Backoff::DEFAULT`]
    /// unless overridden. [`Action::AwaitChange`] waits for the next wake-up instead.
    fn error_policy(&self, key: &Self::Key, error: &Self::Error, failures: u32) -> Action {
        let _ = (key, error);
        Action::Requeue(Backoff::DEFAULT.delay(failures))
    }
}

/// How a [`Controller`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Most reconciles running at once (at least 1).
    pub workers: usize,
    /// Every key is reconciled at least this often, even without a wake-up.
    pub resync: Duration,
    /// The first resync runs this long after start (objects from a previous run).
    pub first_resync: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 4,
            resync: Duration::from_secs(60),
            first_resync: Duration::from_millis(500),
        }
    }
}

/// Runs a [`Reconciler`] over keys from a trigger source; see the module docs.
pub struct Controller<R: Reconciler> {
    reconciler: Arc<R>,
    config: Config,
}

impl<R: Reconciler> Controller<R> {
    /// A controller for `reconciler`, run as `config` says.
    pub fn new(reconciler: Arc<R>, config: Config) -> Self {
        Controller { reconciler, config }
    }

    /// Runs until `triggers` ends, then waits for the reconciles still running and returns.
    pub async fn run<S>(self, triggers: S)
    where
        S: Stream<Item = R::Key> + Send,
    {
        let Controller { reconciler, config } = self;
        let workers = config.workers.max(1);
        let mut triggers = std::pin::pin!(triggers.fuse());
        let mut queue: Queue<R::Key> = Queue::default();
        let mut running: JoinSet<Result<Action, R::Error>> = JoinSet::new();
        let mut running_keys: HashMap<tokio::task::Id, R::Key> = HashMap::new();
        let mut next_resync = Instant::now() + config.first_resync;
        loop {
            while running.len() < workers {
                let Some(key) = queue.start_next() else { break };
                let r = Arc::clone(&reconciler);
                let k = key.clone();
                let handle = running.spawn(async move { r.reconcile(&k).await });
                running_keys.insert(handle.id(), key);
            }
            let wake_at = queue.next_due().map_or(next_resync, |t| t.min(next_resync));
            tokio::select! {
                biased;
                Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                    let (id, outcome) = match done {
                        Ok((id, outcome)) => (id, Ok(outcome)),
                        Err(e) => (e.id(), Err(e)),
                    };
                    let Some(key) = running_keys.remove(&id) else { continue };
                    let now = Instant::now();
                    match outcome {
                        Ok(Ok(action)) => queue.finished_ok(&key, action, now),
                        Ok(Err(e)) => {
                            let failures = queue.failures(&key) + 1;
                            let next = reconciler.error_policy(&key, &e, failures);
                            tracing::warn!(key = ?key, error = %e, failures, next = ?next, "reconcile failed");
                            queue.finished_err(&key, next, now);
                        }
                        Err(join) => {
                            // A panic has no error for the policy: the default backoff.
                            let failures = queue.failures(&key) + 1;
                            let next = Action::Requeue(Backoff::DEFAULT.delay(failures));
                            tracing::error!(key = ?key, error = %join, failures, next = ?next, "reconcile panicked");
                            queue.finished_err(&key, next, now);
                        }
                    }
                }
                t = triggers.next() => {
                    let Some(key) = t else { break };
                    queue.wake(key);
                    // Take every wake-up already waiting, so duplicates fold into one run.
                    while let Some(Some(key)) = triggers.next().now_or_never() {
                        queue.wake(key);
                    }
                }
                _ = tokio::time::sleep_until(wake_at) => {
                    let now = Instant::now();
                    queue.pop_due(now);
                    if now >= next_resync {
                        next_resync = now + config.resync;
                        match reconciler.list().await {
                            Ok(keys) => keys.into_iter().for_each(|k| queue.wake(k)),
                            Err(e) => tracing::warn!(error = %e, "controller resync failed"),
                        }
                    }
                }
            }
        }
        while running.join_next().await.is_some() {}
    }
}

/// The scheduling state of a controller: which keys wait, run, or are due later. No IO.
#[derive(Debug)]
struct Queue<K> {
    /// Keys to reconcile now, oldest first; each at most once.
    ready: VecDeque<K>,
    queued: HashSet<K>,
    /// Keys being reconciled.
    running: HashSet<K>,
    /// Running keys woken again: reconciled once more after they end.
    rerun: HashSet<K>,
    /// When each key with a timer is due, and the same ordered by time.
    timers: HashMap<K, Instant>,
    due: BTreeSet<(Instant, K)>,
    /// Errors in a row per key.
    failures: HashMap<K, u32>,
}

impl<K> Default for Queue<K> {
    fn default() -> Self {
        Queue {
            ready: VecDeque::new(),
            queued: HashSet::new(),
            running: HashSet::new(),
            rerun: HashSet::new(),
            timers: HashMap::new(),
            due: BTreeSet::new(),
            failures: HashMap::new(),
        }
    }
}

impl<K: Clone + Eq + Hash + Ord> Queue<K> {
    /// Asks for a reconcile of `key` as soon as possible.
    fn wake(&mut self, key: K) {
        if self.running.contains(&key) {
            self.rerun.insert(key);
        } else if self.queued.insert(key.clone()) {
            self.ready.push_back(key);
        }
    }

    /// The next key to reconcile, now marked running.
    fn start_next(&mut self) -> Option<K> {
        let key = self.ready.pop_front()?;
        self.queued.remove(&key);
        self.running.insert(key.clone());
        Some(key)
    }

    /// The earliest timer.
    fn next_due(&self) -> Option<Instant> {
        self.due.first().map(|(t, _)| *t)
    }

    /// Wakes every key whose timer is due at `now`.
    fn pop_due(&mut self, now: Instant) {
        while let Some((t, _)) = self.due.first() {
            if *t > now {
                break;
            }
            let Some((_, key)) = self.due.pop_first() else {
                break;
            };
            self.timers.remove(&key);
            self.wake(key);
        }
    }

    /// Sets `key`'s timer to `at`; with `keep_earlier`, an earlier timer stays.
    fn set_timer(&mut self, key: &K, at: Instant, keep_earlier: bool) {
        if let Some(old) = self.timers.get(key).copied() {
            if keep_earlier && old <= at {
                return;
            }
            self.due.remove(&(old, key.clone()));
        }
        self.timers.insert(key.clone(), at);
        self.due.insert((at, key.clone()));
    }

    fn clear_timer(&mut self, key: &K) {
        if let Some(old) = self.timers.remove(key) {
            self.due.remove(&(old, key.clone()));
        }
    }

    /// Errors in a row of `key`.
    fn failures(&self, key: &K) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }

    /// `key`'s reconcile ended; a key woken meanwhile goes back to the queue.
    fn finished(&mut self, key: &K) {
        self.running.remove(key);
        if self.rerun.remove(key) {
            self.wake(key.clone());
        }
    }

    /// `key`'s reconcile succeeded and asked for `action`.
    fn finished_ok(&mut self, key: &K, action: Action, now: Instant) {
        self.failures.remove(key);
        match action {
            Action::Requeue(after) => self.set_timer(key, now + after, true),
            Action::AwaitChange => self.clear_timer(key),
        }
        self.finished(key);
    }

    /// `key`'s reconcile failed; the error policy asked for `next`.
    fn finished_err(&mut self, key: &K, next: Action, now: Instant) {
        *self.failures.entry(key.clone()).or_insert(0) += 1;
        match next {
            Action::Requeue(after) => self.set_timer(key, now + after, false),
            Action::AwaitChange => self.clear_timer(key),
        }
        self.finished(key);
    }
}

#[cfg(test)]
mod tests;
