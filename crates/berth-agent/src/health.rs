//! Container health checks (ECS `healthCheck`, Docker's semantics): the command runs inside
//! the container (`<runtime> exec`) every `interval` seconds, a run longer than `timeout`
//! seconds fails, `retries` consecutive failures make the container UNHEALTHY, one success
//! makes it HEALTHY, and failures during the first `start_period` seconds do not count.

use std::process::Stdio;
use std::time::{Duration, Instant};

use berth_api::agent::HealthCheckSpec;
use berth_core::status::HealthStatus;
use tokio::sync::mpsc;

/// Health of one container between probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// `UNKNOWN` until the first success or the failure limit.
    pub status: HealthStatus,
    /// Consecutive failures counted so far.
    pub failures: u32,
}

impl State {
    pub fn new() -> State {
        State {
            status: HealthStatus::Unknown,
            failures: 0,
        }
    }

    /// The state after one probe.
    pub fn next(self, ok: bool, in_start_period: bool, retries: u32) -> State {
        if ok {
            return State {
                status: HealthStatus::Healthy,
                failures: 0,
            };
        }
        if in_start_period && self.status != HealthStatus::Healthy {
            return self;
        }
        let failures = self.failures + 1;
        State {
            status: if failures >= retries.max(1) {
                HealthStatus::Unhealthy
            } else {
                self.status
            },
            failures,
        }
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

/// The argv a health check command runs: `["CMD", exe, args..]` as is, `["CMD-SHELL", cmd]`
/// through `/bin/sh -c`. `None` for `["NONE"]`, an empty or unknown form.
pub fn probe_args(command: &[String]) -> Option<Vec<String>> {
    match command.split_first() {
        Some((k, rest)) if k == "CMD" && !rest.is_empty() => Some(rest.to_vec()),
        Some((k, rest)) if k == "CMD-SHELL" && !rest.is_empty() => {
            Some(vec!["/bin/sh".into(), "-c".into(), rest.join(" ")])
        }
        _ => None,
    }
}

/// Runs one probe in container `id`; true when it exits 0 within `timeout`.
pub async fn probe(runtime: &str, id: &str, args: &[String], timeout: Duration) -> bool {
    let child = tokio::process::Command::new(runtime)
        .arg("exec")
        .arg(id)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(st)) => st.success(),
        _ => false,
    }
}

/// Probes container `idx` (runtime id `id`) forever, sending `(idx, status)` whenever the
/// status changes. `started` is when the container started (for the start period).
pub fn spawn(
    runtime: String,
    id: String,
    idx: usize,
    hc: HealthCheckSpec,
    started: Instant,
    initial: State,
    tx: mpsc::UnboundedSender<(usize, HealthStatus)>,
) -> Option<tokio::task::JoinHandle<()>> {
    let args = probe_args(&hc.command)?;
    Some(tokio::spawn(async move {
        let interval = Duration::from_secs(hc.interval.max(1) as u64);
        let timeout = Duration::from_secs(hc.timeout.max(1) as u64);
        let start_period = Duration::from_secs(hc.start_period as u64);
        let mut st = initial;
        loop {
            tokio::time::sleep(interval).await;
            let ok = probe(&runtime, &id, &args, timeout).await;
            let next = st.next(ok, started.elapsed() < start_period, hc.retries);
            if next.status != st.status && tx.send((idx, next.status)).is_err() {
                return;
            }
            st = next;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine() {
        let s = State::new();
        // Failures in the start period do not count.
        let s = s.next(false, true, 2);
        assert_eq!(s, State::new());
        let s = s.next(false, false, 2);
        assert_eq!((s.status, s.failures), (HealthStatus::Unknown, 1));
        let s = s.next(false, false, 2);
        assert_eq!((s.status, s.failures), (HealthStatus::Unhealthy, 2));
        let s = s.next(true, false, 2);
        assert_eq!((s.status, s.failures), (HealthStatus::Healthy, 0));
        // Once healthy, failures count even inside the start period.
        let s = s.next(false, true, 1);
        assert_eq!(s.status, HealthStatus::Unhealthy);
    }

    #[test]
    fn args() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            probe_args(&v(&["CMD-SHELL", "curl -f localhost || exit 1"])).unwrap(),
            v(&["/bin/sh", "-c", "curl -f localhost || exit 1"])
        );
        assert_eq!(
            probe_args(&v(&["CMD", "true", "x"])).unwrap(),
            v(&["true", "x"])
        );
        assert!(probe_args(&v(&["NONE"])).is_none());
        assert!(probe_args(&[]).is_none());
    }
}
