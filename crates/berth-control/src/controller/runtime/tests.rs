//! The runtime under tokio's paused clock: every time below is virtual and exact.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

type Outcome = Box<dyn Fn(&str, usize) -> Result<Action, String> + Send + Sync>;

/// A reconciler that records when each reconcile started, how many ran at once (per key and in
/// all), takes `work` per reconcile, and answers what `outcome(key, n)` says for the key's n-th
/// reconcile (from 0).
struct Probe {
    starts: Mutex<Vec<(String, Instant)>>,
    active: Mutex<HashMap<String, usize>>,
    max_per_key: AtomicUsize,
    total: AtomicUsize,
    max_total: AtomicUsize,
    work: Duration,
    outcome: Outcome,
    keys: Vec<String>,
}

impl Probe {
    fn new(work: Duration, outcome: Outcome) -> Arc<Self> {
        Arc::new(Probe {
            starts: Mutex::new(Vec::new()),
            active: Mutex::new(HashMap::new()),
            max_per_key: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            max_total: AtomicUsize::new(0),
            work,
            outcome,
            keys: Vec::new(),
        })
    }

    /// Start times of `key`'s reconciles, relative to `t0`, in seconds.
    fn runs(&self, key: &str, t0: Instant) -> Vec<f64> {
        self.starts
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, t)| (*t - t0).as_secs_f64())
            .collect()
    }
}

impl Reconciler for Probe {
    type Key = String;
    type Error = String;

    async fn reconcile(&self, key: &String) -> Result<Action, String> {
        let n = {
            let mut starts = self.starts.lock().unwrap();
            starts.push((key.clone(), Instant::now()));
            starts.iter().filter(|(k, _)| k == key).count() - 1
        };
        {
            let mut active = self.active.lock().unwrap();
            let a = active.entry(key.clone()).or_insert(0);
            *a += 1;
            self.max_per_key.fetch_max(*a, Ordering::SeqCst);
        }
        let total = self.total.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_total.fetch_max(total, Ordering::SeqCst);
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        self.total.fetch_sub(1, Ordering::SeqCst);
        *self.active.lock().unwrap().get_mut(key).unwrap() -= 1;
        (self.outcome)(key, n)
    }

    async fn list(&self) -> Result<Vec<String>, String> {
        Ok(self.keys.clone())
    }
}

/// No timers of the runtime's own in the way: resync far away.
fn quiet(workers: usize) -> Config {
    Config {
        workers,
        resync: Duration::from_secs(3600),
        first_resync: Duration::from_secs(3600),
    }
}

/// Starts a controller fed by a channel; returns the sender and the controller's task.
fn start(
    probe: &Arc<Probe>,
    config: Config,
) -> (UnboundedSender<String>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = unbounded_channel::<String>();
    let triggers =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|k| (k, rx)) });
    let task = tokio::spawn(Controller::new(Arc::clone(probe), config).run(triggers));
    (tx, task)
}

fn wait_for_change() -> Outcome {
    Box::new(|_, _| Ok(Action::AwaitChange))
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn assert_times(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "runs at {got:?}, expected {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-3, "runs at {got:?}, expected {want:?}");
    }
}

#[test]
fn backoff_doubles_from_the_first_delay_up_to_the_cap() {
    let b = Backoff::DEFAULT;
    assert_eq!(b.delay(0), Duration::from_millis(400));
    assert_eq!(b.delay(1), Duration::from_millis(400));
    assert_eq!(b.delay(2), Duration::from_millis(800));
    assert_eq!(b.delay(8), Duration::from_millis(51_200));
    assert_eq!(b.delay(9), Duration::from_secs(60));
    assert_eq!(b.delay(u32::MAX), Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn no_two_reconciles_of_one_key_run_at_once() {
    // Fewer keys than workers, so a worker is free whenever a running key is woken again.
    let probe = Probe::new(Duration::from_millis(10), wait_for_change());
    let (tx, _task) = start(&probe, quiet(4));
    let keys = ["a", "b", "c"];
    let mut last_wake = HashMap::new();
    for _ in 0..30 {
        for k in keys {
            tx.send(k.to_string()).unwrap();
            last_wake.insert(k, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(probe.max_per_key.load(Ordering::SeqCst), 1);
    // Reconciles of different keys did overlap.
    assert_eq!(probe.max_total.load(Ordering::SeqCst), 3);
    // No wake-up is lost: every key was reconciled after its last wake-up.
    let starts = probe.starts.lock().unwrap();
    for k in keys {
        let last = starts
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, t)| *t)
            .max();
        assert!(last.is_some_and(|t| t >= last_wake[k]), "{k}");
    }
}

#[tokio::test(start_paused = true)]
async fn at_most_the_configured_workers_run_at_once() {
    let probe = Probe::new(Duration::from_millis(10), wait_for_change());
    let (tx, _task) = start(&probe, quiet(3));
    let t0 = Instant::now();
    for k in 0..10 {
        tx.send(format!("k{k}")).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(probe.max_total.load(Ordering::SeqCst), 3);
    // Ten keys, three at a time, 10 ms each: four rounds.
    let mut all: Vec<f64> = (0..10)
        .flat_map(|k| probe.runs(&format!("k{k}"), t0))
        .collect();
    all.sort_by(f64::total_cmp);
    assert_times(
        &all,
        &[0.0, 0.0, 0.0, 0.01, 0.01, 0.01, 0.02, 0.02, 0.02, 0.03],
    );
}

#[tokio::test(start_paused = true)]
async fn wake_ups_of_a_waiting_key_are_deduplicated() {
    let probe = Probe::new(Duration::ZERO, wait_for_change());
    let (tx, _task) = start(&probe, quiet(1));
    let t0 = Instant::now();
    for _ in 0..5 {
        tx.send("a".into()).unwrap();
        tx.send("b".into()).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_times(&probe.runs("a", t0), &[0.0]);
    assert_times(&probe.runs("b", t0), &[0.0]);
}

#[tokio::test(start_paused = true)]
async fn a_key_woken_while_running_runs_once_more_after() {
    let probe = Probe::new(Duration::from_millis(100), wait_for_change());
    let (tx, _task) = start(&probe, quiet(4));
    let t0 = Instant::now();
    tx.send("a".into()).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    for _ in 0..3 {
        tx.send("a".into()).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_times(&probe.runs("a", t0), &[0.0, 0.1]);
    assert_eq!(probe.max_per_key.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn errors_back_off_exponentially_up_to_the_cap() {
    let probe = Probe::new(Duration::ZERO, Box::new(|_, _| Err("boom".into())));
    let (tx, _task) = start(&probe, quiet(1));
    let t0 = Instant::now();
    tx.send("a".into()).unwrap();
    tokio::time::sleep(secs(400.0)).await;
    // Delays 0.4, 0.8, ... 51.2, then 60 s.
    let mut want = vec![0.0];
    let mut delay: f64 = 0.4;
    while *want.last().unwrap() + delay.min(60.0) < 400.0 {
        want.push(want.last().unwrap() + delay.min(60.0));
        delay *= 2.0;
    }
    assert_times(&probe.runs("a", t0), &want);
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_backoff() {
    // Errors on reconciles 0, 1 and 3; 2 and 4 succeed.
    let probe = Probe::new(
        Duration::ZERO,
        Box::new(|_, n| {
            if n == 2 || n >= 4 {
                Ok(Action::AwaitChange)
            } else {
                Err(format!("error {n}"))
            }
        }),
    );
    let (tx, _task) = start(&probe, quiet(1));
    let t0 = Instant::now();
    tx.send("a".into()).unwrap();
    tokio::time::sleep(secs(10.0)).await;
    assert_times(&probe.runs("a", t0), &[0.0, 0.4, 1.2]);
    tx.send("a".into()).unwrap();
    tokio::time::sleep(secs(10.0)).await;
    // The error after the success waits the first delay again, not the third.
    assert_times(&probe.runs("a", t0), &[0.0, 0.4, 1.2, 10.0, 10.4]);
}

#[tokio::test(start_paused = true)]
async fn the_error_policy_decides_the_retry() {
    struct Patient(Arc<Probe>);
    impl Reconciler for Patient {
        type Key = String;
        type Error = String;
        async fn reconcile(&self, key: &String) -> Result<Action, String> {
            self.0.reconcile(key).await
        }
        async fn list(&self) -> Result<Vec<String>, String> {
            Ok(vec![])
        }
        fn error_policy(&self, _: &String, error: &String, failures: u32) -> Action {
            assert_eq!(error, "boom");
            if failures < 2 {
                Action::requeue(secs(7.0))
            } else {
                Action::await_change()
            }
        }
    }
    let probe = Probe::new(Duration::ZERO, Box::new(|_, _| Err("boom".into())));
    let (tx, rx) = unbounded_channel::<String>();
    let triggers =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|k| (k, rx)) });
    tokio::spawn(Controller::new(Arc::new(Patient(probe.clone())), quiet(1)).run(triggers));
    let t0 = Instant::now();
    tx.send("a".into()).unwrap();
    tokio::time::sleep(secs(100.0)).await;
    assert_times(&probe.runs("a", t0), &[0.0, 7.0]);
}

#[tokio::test(start_paused = true)]
async fn requeue_runs_again_after_the_delay_and_await_change_waits() {
    let probe = Probe::new(
        Duration::ZERO,
        Box::new(|_, n| {
            Ok(if n < 2 {
                Action::requeue(secs(5.0))
            } else {
                Action::await_change()
            })
        }),
    );
    let (tx, _task) = start(&probe, quiet(2));
    let t0 = Instant::now();
    tx.send("a".into()).unwrap();
    tokio::time::sleep(secs(60.0)).await;
    assert_times(&probe.runs("a", t0), &[0.0, 5.0, 10.0]);
    tx.send("a".into()).unwrap();
    tokio::time::sleep(secs(60.0)).await;
    assert_times(&probe.runs("a", t0), &[0.0, 5.0, 10.0, 60.0]);
}

#[tokio::test(start_paused = true)]
async fn an_earlier_requeue_is_kept() {
    // The first reconcile asks to look again in 10 s; a wake-up at 2 s asks for 30 s: the
    // 10 s timer stands.
    let probe = Probe::new(
        Duration::ZERO,
        Box::new(|_, n| {
            Ok(match n {
                0 => Action::requeue(secs(10.0)),
                1 => Action::requeue(secs(30.0)),
                _ => Action::await_change(),
            })
        }),
    );
    let (tx, _task) = start(&probe, quiet(1));
    let t0 = Instant::now();
    tx.send("a".into()).unwrap();
    tokio::time::sleep(secs(2.0)).await;
    tx.send("a".into()).unwrap();
    tokio::time::sleep(secs(100.0)).await;
    assert_times(&probe.runs("a", t0), &[0.0, 2.0, 10.0]);
}

#[tokio::test(start_paused = true)]
async fn resync_reconciles_every_listed_key() {
    let mut probe = Probe::new(Duration::ZERO, wait_for_change());
    Arc::get_mut(&mut probe).unwrap().keys = vec!["x".into(), "y".into()];
    let config = Config {
        workers: 2,
        resync: secs(60.0),
        first_resync: secs(0.5),
    };
    let t0 = Instant::now();
    let (_tx, _task) = start(&probe, config);
    tokio::time::sleep(secs(130.0)).await;
    assert_times(&probe.runs("x", t0), &[0.5, 60.5, 120.5]);
    assert_times(&probe.runs("y", t0), &[0.5, 60.5, 120.5]);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_reconcile_is_retried_with_backoff() {
    let probe = Probe::new(
        Duration::ZERO,
        Box::new(|_, n| {
            assert!(n > 0, "the first reconcile panics");
            Ok(Action::AwaitChange)
        }),
    );
    let (tx, _task) = start(&probe, quiet(1));
    let t0 = Instant::now();
    tx.send("a".into()).unwrap();
    tokio::time::sleep(secs(10.0)).await;
    assert_times(&probe.runs("a", t0), &[0.0, 0.4]);
}

#[tokio::test(start_paused = true)]
async fn ends_when_the_triggers_end_after_running_reconciles_finish() {
    let probe = Probe::new(Duration::from_secs(3), wait_for_change());
    let (tx, task) = start(&probe, quiet(1));
    let t0 = Instant::now();
    tx.send("a".into()).unwrap();
    tokio::time::sleep(secs(1.0)).await;
    drop(tx);
    task.await.unwrap();
    assert!(Instant::now() - t0 >= secs(3.0));
    assert_times(&probe.runs("a", t0), &[0.0]);
    assert_eq!(probe.total.load(Ordering::SeqCst), 0);
}
