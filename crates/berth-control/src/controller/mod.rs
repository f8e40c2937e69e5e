//! Controllers (DESIGN §3): level-triggered reconcile loops.
//!
//! The service controller is one tokio task. It watches the store (the service kind, and the
//! task kind for tasks that belong to a service) from the revision it starts at, so any write
//! to a service or one of its tasks — by an API handler, an agent report, or another server
//! sharing the store — wakes that service's key (`<cluster>/<service>`); a slow periodic resync
//! covers every service as well. Keys are deduplicated and reconciled one at a time, so no two
//! reconciles ever run on one service; a failed reconcile is retried with exponential backoff.
//! When nothing changes the task waits on the watches, so idle services cost nothing but the
//! resync.

pub mod runtime;
pub mod service;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use berth_store::{Change, ChangeEvent, Watch};
use tokio::time::Instant;

use crate::ecs::tasks::TaskRecord;
use crate::ecs::{SERVICE, TASK};
use crate::ControlPlane;

/// Every service is reconciled at least this often, even without a wake-up.
pub const RESYNC: Duration = Duration::from_secs(60);

/// Starts the service controller task on the current tokio runtime (none: nothing starts).
pub(crate) fn spawn(cp: Arc<ControlPlane>) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(run(cp));
    }
}

/// The service key a change wakes: the service itself, or the service owning a task (its
/// `group` is `service:<name>`).
fn service_key_of(change: &Change) -> Option<String> {
    if change.kind == SERVICE {
        return Some(change.key.clone());
    }
    let ChangeEvent::Put(value) = &change.event else {
        return None;
    };
    let rec: TaskRecord = serde_json::from_slice(value).ok()?;
    let name = rec.task.group.as_deref()?.strip_prefix("service:")?;
    let cluster = change.key.split_once('/')?.0;
    Some(format!("{cluster}/{name}"))
}

/// Watches of the service and task kinds from the store's current revision.
async fn watches(cp: &ControlPlane) -> Result<(Watch, Watch), berth_store::StoreError> {
    let rev = cp.store.current_revision().await?;
    Ok((
        cp.store.watch(SERVICE, "", rev).await?,
        cp.store.watch(TASK, "", rev).await?,
    ))
}

/// Adds the key a watched change wakes to `dirty`; false when the watch failed (it fell
/// further behind than the store's history).
fn absorb(c: berth_store::Result<Change>, dirty: &mut BTreeSet<String>) -> bool {
    match c {
        Ok(c) => {
            dirty.extend(service_key_of(&c));
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "service controller watch ended; watching again");
            false
        }
    }
}

async fn run(cp: Arc<ControlPlane>) {
    // Due times of keys that asked to be looked at again, and error backoff per key.
    let mut timers: HashMap<String, Instant> = HashMap::new();
    let mut failures: HashMap<String, u32> = HashMap::new();
    let mut streams = None;
    // Resync once soon after start (services from a previous run), then every RESYNC.
    let mut next_resync = Instant::now() + Duration::from_millis(500);
    loop {
        let (services, tasks) = match &mut streams {
            Some(s) => s,
            None => match watches(&cp).await {
                Ok(s) => streams.insert(s),
                Err(e) => {
                    tracing::warn!(error = %e, "service controller cannot watch the store");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let next_timer = timers.values().min().copied();
        let wake_at = next_timer.map_or(next_resync, |t| t.min(next_resync));
        let mut dirty = BTreeSet::new();
        let mut ok = tokio::select! {
            c = services.next() => absorb(c, &mut dirty),
            c = tasks.next() => absorb(c, &mut dirty),
            _ = tokio::time::sleep_until(wake_at) => true,
        };
        // Everything else already delivered joins this round (`next` is cancel-safe).
        while ok {
            ok = tokio::select! {
                biased;
                c = services.next() => absorb(c, &mut dirty),
                c = tasks.next() => absorb(c, &mut dirty),
                _ = std::future::ready(()) => break,
            };
        }
        if !ok {
            // Watch again from now; a resync catches what changed in between.
            streams = None;
            next_resync = Instant::now();
        }
        let now = Instant::now();
        timers.retain(|k, due| {
            if *due <= now {
                dirty.insert(k.clone());
                false
            } else {
                true
            }
        });
        if now >= next_resync {
            next_resync = now + RESYNC;
            match cp.service_keys().await {
                Ok(keys) => dirty.extend(keys),
                Err(e) => tracing::warn!(error = %e, "service resync failed"),
            }
        }
        for key in dirty {
            match cp.reconcile_service(&key).await {
                Ok(after) => {
                    failures.remove(&key);
                    if let Some(secs) = after {
                        let due =
                            Instant::now() + Duration::from_secs_f64(secs.clamp(0.05, 3600.0));
                        let e = timers.entry(key).or_insert(due);
                        *e = (*e).min(due);
                    } else {
                        timers.remove(&key);
                    }
                }
                Err(e) => {
                    let n = failures.entry(key.clone()).or_insert(0);
                    *n += 1;
                    let delay = Duration::from_millis(200 * (1u64 << (*n).min(8)))
                        .min(Duration::from_secs(60));
                    tracing::warn!(service = %key, error = %e, retry_in = ?delay, "service reconcile failed");
                    timers.insert(key, Instant::now() + delay);
                }
            }
        }
    }
}
