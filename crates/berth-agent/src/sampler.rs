//! Task utilization sampling for CloudWatch metrics: every interval the agent reads each running
//! task's cgroup CPU time (v1 `cpuacct.usage`, v2 `cpu.stat` `usage_usec`) and memory use (v1
//! `memory.usage_in_bytes` minus `total_cache`, v2 `memory.current` minus `inactive_file`), turns
//! them into ECS utilization (percent of the task's reserved CPU units and memory) and posts one
//! [`MetricsBatch`] to the control plane. A task's first reading only sets its CPU baseline.
//! Cost per task and interval: two or three small cgroup file reads, plus a walk of the task's
//! writable storage for its ephemeral storage limit (see [`crate::ephemeral`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::agent::{MetricsBatch, TaskMetricSample};

use crate::cgroups::{controller_dir, Layout};
use crate::{ephemeral, Agent};

/// What the sampler needs to know about a running task.
pub struct RunningTask {
    pub task_id: String,
    pub cluster: String,
    /// Reserved CPU units (task `cpu`, else the containers' `cpu` sum, else 1024).
    pub cpu_units: u32,
    /// Reserved memory in MiB (task `memory`, else the containers' limits or reservations);
    /// `None` reports 0 % memory.
    pub memory_mib: Option<u32>,
    /// ECS `ephemeralStorage.sizeInGiB` (`None`: the default).
    pub ephemeral_gib: Option<u32>,
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

fn stat_field(s: &str, key: &str) -> Option<u64> {
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// CPU time in ns and memory in use (bytes, page cache excluded) of cgroup `rel`.
pub fn usage(layout: &Layout, rel: &str) -> (Option<u64>, u64) {
    let num = |p: &Path| read(p).and_then(|s| s.trim().parse::<u64>().ok());
    if layout.is_unified() {
        let Some(d) = controller_dir(layout, "memory", rel) else {
            return (None, 0);
        };
        let cpu = read(&d.join("cpu.stat"))
            .and_then(|s| stat_field(&s, "usage_usec"))
            .map(|u| u * 1000);
        let cur = num(&d.join("memory.current")).unwrap_or(0);
        let inactive = read(&d.join("memory.stat"))
            .and_then(|s| stat_field(&s, "inactive_file"))
            .unwrap_or(0);
        return (cpu, cur.saturating_sub(inactive));
    }
    let cpu = controller_dir(layout, "cpuacct", rel).and_then(|d| num(&d.join("cpuacct.usage")));
    let mem = controller_dir(layout, "memory", rel)
        .map(|d| {
            let used = num(&d.join("memory.usage_in_bytes")).unwrap_or(0);
            let cache = read(&d.join("memory.stat"))
                .and_then(|s| stat_field(&s, "total_cache"))
                .unwrap_or(0);
            used.saturating_sub(cache)
        })
        .unwrap_or(0);
    (cpu, mem)
}

/// ECS CPUUtilization: CPU time used over `elapsed` against the reserved vCPUs, in percent.
pub fn cpu_percent(delta_ns: u64, elapsed: Duration, cpu_units: u32) -> f64 {
    let reserved_ns = elapsed.as_nanos() as f64 * cpu_units.max(1) as f64 / 1024.0;
    if reserved_ns <= 0.0 {
        return 0.0;
    }
    delta_ns as f64 / reserved_ns * 100.0
}

/// Measures each task's ephemeral storage (off the async threads), records it for the
/// metadata endpoint and asks the supervisor of a task over its limit to stop it.
async fn check_ephemeral(agent: &Arc<Agent>, tasks: Vec<(String, Option<u32>)>) {
    if tasks.is_empty() {
        return;
    }
    let dir = agent.tasks_dir.clone();
    let measured = tokio::task::spawn_blocking(move || {
        tasks
            .into_iter()
            .map(|(id, gib)| {
                let limit = ephemeral::limit_bytes(gib);
                let usage = ephemeral::measure(&dir.join(&id), limit);
                (id, gib, limit, usage)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for (id, gib, limit, usage) in measured {
        agent.metadata.set_ephemeral_usage(&id, usage.bytes);
        if usage.over {
            let why = ephemeral::reason(usage, limit, gib);
            tracing::warn!(task = %id, "{why}");
            agent.evictions.evict(&id, why);
        }
    }
}

/// Samples every `interval` forever.
pub async fn run(agent: Arc<Agent>, interval: Duration) {
    let mut last: HashMap<String, (Instant, u64)> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let tasks = agent.metadata.running();
        let now = Instant::now();
        let ts = (berth_core::epoch_now() * 1000.0) as i64;
        let mut samples = Vec::new();
        let mut seen = HashMap::new();
        let storage: Vec<(String, Option<u32>)> = tasks
            .iter()
            .map(|t| (t.task_id.clone(), t.ephemeral_gib))
            .collect();
        for t in tasks {
            let (cpu, mem) = usage(&agent.layout, &crate::task::cgroup_task_rel(&t.task_id));
            let Some(cpu) = cpu else { continue };
            if let Some((at, prev)) = last.get(&t.task_id) {
                let mem_pct = t
                    .memory_mib
                    .map(|m| mem as f64 / (m as f64 * 1024.0 * 1024.0) * 100.0)
                    .unwrap_or(0.0);
                samples.push(TaskMetricSample {
                    task_id: t.task_id.clone(),
                    cluster_name: t.cluster.clone(),
                    timestamp: ts,
                    cpu_utilization: cpu_percent(cpu.saturating_sub(*prev), now - *at, t.cpu_units),
                    memory_utilization: mem_pct,
                });
            }
            seen.insert(t.task_id, (now, cpu));
        }
        last = seen;
        check_ephemeral(&agent, storage).await;
        if !samples.is_empty() {
            if let Err(e) = agent.control.post_metrics(&MetricsBatch { samples }).await {
                tracing::debug!("metrics: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utilization_math() {
        // A quarter vCPU (256 units) fully used for 1 s is 100 %.
        assert_eq!(cpu_percent(250_000_000, Duration::from_secs(1), 256), 100.0);
        assert_eq!(cpu_percent(500_000_000, Duration::from_secs(1), 1024), 50.0);
        assert_eq!(
            stat_field("cache 5\ntotal_cache 7\n", "total_cache"),
            Some(7)
        );
        assert_eq!(
            stat_field("usage_usec 12\nuser_usec 3", "usage_usec"),
            Some(12)
        );
    }
}
