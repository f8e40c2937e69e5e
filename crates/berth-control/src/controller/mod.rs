//! Controllers (DESIGN §3): level-triggered reconcile loops.
//!
//! The service controller runs on one thread. It is woken with a service key
//! (`<cluster>/<service>`) whenever something about that service changes (an API write, a report
//! from an agent about one of its tasks), plus a slow periodic resync of every service. Keys are
//! deduplicated and reconciled one at a time, so no two reconciles ever run on one service; a
//! failed reconcile is retried with exponential backoff. When nothing changes the thread sleeps
//! in `recv_timeout`, so idle services cost nothing but the resync.

pub mod runtime;
pub mod service;

use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ControlPlane;

/// Every service is reconciled at least this often, even without a wake-up.
pub const RESYNC: Duration = Duration::from_secs(60);

/// Starts the service controller thread.
pub(crate) fn spawn(cp: Arc<ControlPlane>, rx: Receiver<String>) {
    let _ = std::thread::Builder::new()
        .name("service-controller".into())
        .spawn(move || run(cp, rx));
}

fn run(cp: Arc<ControlPlane>, rx: Receiver<String>) {
    // Due times of keys that asked to be looked at again, and error backoff per key.
    let mut timers: HashMap<String, Instant> = HashMap::new();
    let mut failures: HashMap<String, u32> = HashMap::new();
    // Resync once soon after start (services from a previous run), then every RESYNC.
    let mut next_resync = Instant::now() + Duration::from_millis(500);
    loop {
        let now = Instant::now();
        let next_timer = timers.values().min().copied();
        let wake_at = next_timer.map_or(next_resync, |t| t.min(next_resync));
        let mut dirty = BTreeSet::new();
        match rx.recv_timeout(wake_at.saturating_duration_since(now)) {
            Ok(k) => {
                dirty.insert(k);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while let Ok(k) = rx.try_recv() {
            dirty.insert(k);
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
            match cp.service_keys() {
                Ok(keys) => dirty.extend(keys),
                Err(e) => tracing::warn!(error = %e, "service resync failed"),
            }
        }
        for key in dirty {
            match cp.reconcile_service(&key) {
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
