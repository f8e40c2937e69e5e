//! Metric samples (CloudWatch namespace `AWS/ECS`): append-only per-task utilization samples.
//!
//! Each row is one task's CPU and memory utilization (percent of what the task reserved) at one
//! time (milliseconds since the epoch), tagged with the task's cluster and service (empty when the
//! task belongs to no service). Aggregation to the `{ClusterName}` and `{ClusterName,
//! ServiceName}` dimensions happens at query time. Samples older than [`RETENTION_MS`] are pruned.

use rusqlite::{params, Connection};

use crate::{Result, SqliteStore};

/// How long samples are kept (15 days, CloudWatch's retention for 1-minute data).
pub const RETENTION_MS: i64 = 15 * 86_400 * 1000;

pub(crate) fn init(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS metric_samples(ts INTEGER NOT NULL, cluster TEXT NOT NULL,
            service TEXT NOT NULL, task TEXT NOT NULL, cpu REAL NOT NULL, mem REAL NOT NULL);
         CREATE INDEX IF NOT EXISTS metric_samples_cs ON metric_samples(cluster, service, ts);
         CREATE INDEX IF NOT EXISTS metric_samples_ts ON metric_samples(ts);",
    )
}

/// One task's utilization sample.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub cluster: String,
    /// Service name, empty for tasks outside services.
    pub service: String,
    /// Task id (last part of the task ARN).
    pub task: String,
    /// CPUUtilization, percent of the task's reserved CPU units.
    pub cpu: f64,
    /// MemoryUtilization, percent of the task's reserved memory.
    pub memory: f64,
}

/// Which utilization a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// `CPUUtilization`.
    Cpu,
    /// `MemoryUtilization`.
    Memory,
}

/// Storage of per-task utilization samples (DESIGN §2: beside the [`crate::Store`], never in etcd).
/// Implemented by [`SqliteStore`].
pub trait MetricStore: Send + Sync {
    /// Appends samples and prunes those older than [`RETENTION_MS`].
    fn append_metric_samples(&self, samples: &[MetricSample]) -> Result<()>;

    /// `(timestamp ms, value)` of the samples of `cluster` (and of `service` when given; `None`
    /// means every task of the cluster) with `start <= ts < end`, oldest first.
    fn metric_samples(
        &self,
        kind: MetricKind,
        cluster: &str,
        service: Option<&str>,
        start: i64,
        end: i64,
    ) -> Result<Vec<(i64, f64)>>;

    /// Distinct `(cluster, service)` pairs with samples at or after `since` (service empty for
    /// tasks outside services), ordered.
    fn metric_sources(&self, since: i64) -> Result<Vec<(String, String)>>;
}

impl MetricStore for SqliteStore {
    fn append_metric_samples(&self, samples: &[MetricSample]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO metric_samples(ts, cluster, service, task, cpu, mem)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for s in samples {
                stmt.execute(params![
                    s.timestamp,
                    s.cluster,
                    s.service,
                    s.task,
                    s.cpu,
                    s.memory
                ])?;
            }
            if let Some(newest) = samples.iter().map(|s| s.timestamp).max() {
                tx.execute(
                    "DELETE FROM metric_samples WHERE ts < ?1",
                    params![newest - RETENTION_MS],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn metric_samples(
        &self,
        kind: MetricKind,
        cluster: &str,
        service: Option<&str>,
        start: i64,
        end: i64,
    ) -> Result<Vec<(i64, f64)>> {
        let col = match kind {
            MetricKind::Cpu => "cpu",
            MetricKind::Memory => "mem",
        };
        let conn = self.lock();
        let sql = match service {
            Some(_) => format!(
                "SELECT ts, {col} FROM metric_samples WHERE cluster = ?1 AND service = ?2
                 AND ts >= ?3 AND ts < ?4 ORDER BY ts"
            ),
            None => format!(
                "SELECT ts, {col} FROM metric_samples WHERE cluster = ?1 AND ?2 = ''
                 AND ts >= ?3 AND ts < ?4 ORDER BY ts"
            ),
        };
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![cluster, service.unwrap_or(""), start, end], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn metric_sources(&self, since: i64) -> Result<Vec<(String, String)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT cluster, service FROM metric_samples WHERE ts >= ?1
             ORDER BY cluster, service",
        )?;
        let rows = stmt.query_map(params![since], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ts: i64, service: &str, cpu: f64) -> MetricSample {
        MetricSample {
            timestamp: ts,
            cluster: "c".into(),
            service: service.into(),
            task: "t".into(),
            cpu,
            memory: cpu / 2.0,
        }
    }

    #[test]
    fn samples_by_service_and_cluster_and_retention() {
        let st = SqliteStore::open_in_memory().unwrap();
        st.append_metric_samples(&[s(1000, "web", 10.0), s(2000, "", 30.0)])
            .unwrap();
        let web = st
            .metric_samples(MetricKind::Cpu, "c", Some("web"), 0, 10_000)
            .unwrap();
        assert_eq!(web, vec![(1000, 10.0)]);
        let all = st
            .metric_samples(MetricKind::Memory, "c", None, 0, 10_000)
            .unwrap();
        assert_eq!(all, vec![(1000, 5.0), (2000, 15.0)]);
        assert_eq!(
            st.metric_sources(0).unwrap(),
            vec![("c".into(), "".into()), ("c".into(), "web".into())]
        );
        // A sample past the retention window prunes the old ones.
        st.append_metric_samples(&[s(RETENTION_MS + 1500, "web", 1.0)])
            .unwrap();
        let web = st
            .metric_samples(MetricKind::Cpu, "c", Some("web"), 0, i64::MAX)
            .unwrap();
        assert_eq!(web, vec![(RETENTION_MS + 1500, 1.0)]);
    }
}
