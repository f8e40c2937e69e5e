//! Metering (DESIGN §3): what each task costs, pay-per-use as Fargate bills it.
//!
//! The rule (AWS Fargate pricing, "Pricing is calculated based on the vCPU, memory ... resources
//! used from the time you start to download your container image until the Amazon ECS Task
//! terminates, rounded up to the nearest second", with a one-minute minimum):
//!
//! - a task's billing starts at `pullStartedAt`; a task that never reported a pull starts at
//!   `startedAt`, and one that never started at `createdAt`;
//! - it ends at `stoppedAt`, or at the time of the query for a task that has not stopped;
//! - the billed duration is `max(60, ceil(end - start))` whole seconds, laid out from the start:
//!   the task's billing interval is `[start, start + billed)` (for a young task still running
//!   the minute it already owes reaches past "now");
//! - vCPU-seconds = billed seconds × task CPU units / 1024 (1024 units = 1 vCPU); GB-seconds =
//!   billed seconds × task memory MiB / 1024 (Fargate bills GB as 1024 MiB);
//! - cost = vCPU-seconds × (vCPU-hour rate / 3600) + GB-seconds × (GB-hour rate / 3600), rates
//!   picked by the task's capacity provider (`FARGATE_SPOT`, `FARGATE`) or else its launch type.
//!
//! A query window `[since, until)` and `day` grouping take the part of each task's billing
//! interval that falls in the window / in each UTC day, so any partition of the time line adds up
//! exactly to the whole-life numbers. Everything here is pure: no store, no clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// AWS Fargate Linux/x86 on-demand rate for us-east-1, USD per vCPU-hour
/// (aws.amazon.com/fargate/pricing).
pub const FARGATE_VCPU_HOUR: f64 = 0.04048;
/// AWS Fargate Linux/x86 on-demand rate for us-east-1, USD per GB-hour.
pub const FARGATE_GB_HOUR: f64 = 0.004445;
/// Fargate Spot Linux/x86 rate for us-east-1, USD per vCPU-hour: a snapshot of the Spot price
/// shown on aws.amazon.com/fargate/pricing (Spot prices move; override with `--pricing`).
pub const FARGATE_SPOT_VCPU_HOUR: f64 = 0.01334053;
/// Fargate Spot Linux/x86 rate for us-east-1, USD per GB-hour (same snapshot).
pub const FARGATE_SPOT_GB_HOUR: f64 = 0.00146489;

/// Seconds of the one-minute minimum charge.
pub const MINIMUM_SECONDS: u64 = 60;

/// One rate pair, USD per hour.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    /// USD per vCPU-hour (1 vCPU = 1024 CPU units).
    pub vcpu_per_hour: f64,
    /// USD per GB-hour (1 GB = 1024 MiB).
    pub gb_per_hour: f64,
}

/// The price table: rates keyed by capacity provider name (`FARGATE`, `FARGATE_SPOT`) or launch
/// type (`FARGATE`, `EC2`, `EXTERNAL`). A task whose key has no rate is metered at cost 0 (on AWS
/// EC2/EXTERNAL tasks are paid through their instances, not per task).
///
/// JSON form (the `berth server --pricing FILE` format):
/// `{"currency": "USD", "rates": {"FARGATE": {"vcpu_per_hour": 0.04048, "gb_per_hour": 0.004445},
/// "FARGATE_SPOT": {...}}}`; keys missing from the file keep their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pricing {
    /// ISO 4217 code the rates are in.
    #[serde(default = "usd")]
    pub currency: String,
    /// Rates by capacity provider / launch type.
    #[serde(default)]
    pub rates: BTreeMap<String, Rate>,
}

fn usd() -> String {
    "USD".into()
}

impl Default for Pricing {
    /// Fargate's published us-east-1 Linux/x86 on-demand rates and a Spot snapshot.
    fn default() -> Self {
        let mut rates = BTreeMap::new();
        rates.insert(
            "FARGATE".into(),
            Rate {
                vcpu_per_hour: FARGATE_VCPU_HOUR,
                gb_per_hour: FARGATE_GB_HOUR,
            },
        );
        rates.insert(
            "FARGATE_SPOT".into(),
            Rate {
                vcpu_per_hour: FARGATE_SPOT_VCPU_HOUR,
                gb_per_hour: FARGATE_SPOT_GB_HOUR,
            },
        );
        Self {
            currency: usd(),
            rates,
        }
    }
}

/// A price file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MeteringError {
    /// The JSON did not parse or a rate is negative / not finite.
    #[error("invalid pricing: {0}")]
    InvalidArgument(String),
}

impl Pricing {
    /// Parses a price file (JSON, see [`Pricing`]) over the defaults: the file's rates replace
    /// or add keys. Rates must be finite and >= 0.
    pub fn from_json(text: &str) -> Result<Self, MeteringError> {
        let file: Pricing = serde_json::from_str(text)
            .map_err(|e| MeteringError::InvalidArgument(e.to_string()))?;
        let mut p = Pricing {
            currency: file.currency,
            ..Pricing::default()
        };
        for (k, r) in file.rates {
            for v in [r.vcpu_per_hour, r.gb_per_hour] {
                if !v.is_finite() || v < 0.0 {
                    return Err(MeteringError::InvalidArgument(format!(
                        "rate for {k} must be a finite number >= 0"
                    )));
                }
            }
            p.rates.insert(k, r);
        }
        Ok(p)
    }

    /// The rate for a capacity provider / launch type name (`None`: not priced).
    pub fn rate(&self, key: &str) -> Option<Rate> {
        self.rates.get(key).copied()
    }
}

/// What metering needs of one task (taken from its `DescribeTasks` view).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeteredTask {
    /// Task ARN.
    pub task_arn: String,
    /// Cluster name.
    pub cluster: String,
    /// Service name when the task's group is `service:<name>`.
    pub service: Option<String>,
    /// CPU units (1024 = 1 vCPU); 0 when the task has no task-level size.
    pub cpu_units: u32,
    /// Memory in MiB; 0 when the task has no task-level size.
    pub memory_mib: u32,
    /// `capacityProviderName`, else `launchType`: the key of the rate.
    pub price_key: String,
    /// Epoch seconds: `createdAt`.
    pub created_at: f64,
    /// Epoch seconds: `pullStartedAt`.
    pub pull_started_at: Option<f64>,
    /// Epoch seconds: `startedAt`.
    pub started_at: Option<f64>,
    /// Epoch seconds: `stoppedAt` (None while the task has not stopped).
    pub stopped_at: Option<f64>,
}

impl MeteredTask {
    /// Epoch seconds billing starts at: pullStartedAt, else startedAt, else createdAt.
    pub fn billing_start(&self) -> f64 {
        self.pull_started_at
            .or(self.started_at)
            .unwrap_or(self.created_at)
    }

    /// Whole seconds billed for the task's life up to `now` (epoch seconds): the elapsed time
    /// rounded up to a second, at least [`MINIMUM_SECONDS`].
    pub fn billed_seconds(&self, now: f64) -> u64 {
        let end = self.stopped_at.unwrap_or(now);
        let elapsed = (end - self.billing_start()).max(0.0);
        // Timestamps are millisecond-precise; strip float noise before rounding up.
        let ms = (elapsed * 1000.0).round() as u64;
        ms.div_ceil(1000).max(MINIMUM_SECONDS)
    }
}

/// How usage rows are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// One row per task (key: task ARN).
    Task,
    /// One row per service (key: `<cluster>/<service>`, or `<cluster>/-` for tasks of no service).
    Service,
    /// One row per cluster (key: cluster name).
    Cluster,
    /// One row per UTC day (key: `YYYY-MM-DD`); a task's seconds are split at midnight.
    Day,
}

impl std::str::FromStr for GroupBy {
    type Err = MeteringError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "task" => Ok(Self::Task),
            "service" => Ok(Self::Service),
            "cluster" => Ok(Self::Cluster),
            "day" => Ok(Self::Day),
            _ => Err(MeteringError::InvalidArgument(format!(
                "group_by must be task, service, cluster or day, not {s:?}"
            ))),
        }
    }
}

/// One row of a usage report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The group key (see [`GroupBy`]); `total` for the total row.
    pub key: String,
    /// Number of distinct tasks with billed time in the row.
    pub tasks: u64,
    /// Billed seconds (sum over tasks).
    pub seconds: f64,
    /// vCPU-seconds: billed seconds × CPU units / 1024.
    pub vcpu_seconds: f64,
    /// GB-seconds: billed seconds × MiB / 1024.
    pub gb_seconds: f64,
    /// Cost in the report's currency.
    pub cost: f64,
}

/// A usage report: the `GET /_berth/usage` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// Window start, epoch seconds (None: from the beginning).
    pub since: Option<f64>,
    /// Window end, epoch seconds (None: no end; running tasks accrue up to the query time).
    pub until: Option<f64>,
    /// The time the report was computed at, epoch seconds.
    pub now: f64,
    /// Currency of `cost`.
    pub currency: String,
    /// How rows are keyed.
    pub group_by: GroupBy,
    /// Rows sorted by key.
    pub rows: Vec<UsageRow>,
    /// Sum of the rows (`tasks` counts distinct tasks).
    pub total: UsageRow,
}

const DAY: f64 = 86_400.0;

/// Computes the usage of `tasks` at time `now` in the window `[since, until)` grouped by `group`.
/// Tasks with no billed time in the window are left out.
pub fn report(
    tasks: &[MeteredTask],
    pricing: &Pricing,
    now: f64,
    since: Option<f64>,
    until: Option<f64>,
    group: GroupBy,
) -> UsageReport {
    let mut rows: BTreeMap<String, (UsageRow, std::collections::BTreeSet<usize>)> = BTreeMap::new();
    let mut total = UsageRow {
        key: "total".into(),
        ..Default::default()
    };
    for (i, t) in tasks.iter().enumerate() {
        let start = t.billing_start();
        let end = start + t.billed_seconds(now) as f64;
        let lo = since.map_or(start, |s| start.max(s));
        let hi = until.map_or(end, |u| end.min(u));
        if hi <= lo {
            continue;
        }
        let rate = pricing.rate(&t.price_key);
        let mut slices: Vec<(String, f64)> = Vec::new();
        match group {
            GroupBy::Task => slices.push((t.task_arn.clone(), hi - lo)),
            GroupBy::Cluster => slices.push((t.cluster.clone(), hi - lo)),
            GroupBy::Service => slices.push((
                format!("{}/{}", t.cluster, t.service.as_deref().unwrap_or("-")),
                hi - lo,
            )),
            GroupBy::Day => {
                let mut a = lo;
                while a < hi {
                    let day = (a / DAY).floor();
                    let b = hi.min((day + 1.0) * DAY);
                    slices.push((civil_date(day as i64), b - a));
                    a = b;
                }
            }
        }
        let mut counted = false;
        for (key, secs) in slices {
            let vcpu = secs * t.cpu_units as f64 / 1024.0;
            let gb = secs * t.memory_mib as f64 / 1024.0;
            let cost = rate.map_or(0.0, |r| {
                vcpu * r.vcpu_per_hour / 3600.0 + gb * r.gb_per_hour / 3600.0
            });
            let (row, seen) = rows.entry(key.clone()).or_insert_with(|| {
                (
                    UsageRow {
                        key,
                        ..Default::default()
                    },
                    Default::default(),
                )
            });
            if seen.insert(i) {
                row.tasks += 1;
            }
            row.seconds += secs;
            row.vcpu_seconds += vcpu;
            row.gb_seconds += gb;
            row.cost += cost;
            if !counted {
                total.tasks += 1;
                counted = true;
            }
            total.seconds += secs;
            total.vcpu_seconds += vcpu;
            total.gb_seconds += gb;
            total.cost += cost;
        }
    }
    UsageReport {
        since,
        until,
        now,
        currency: pricing.currency.clone(),
        group_by: group,
        rows: rows.into_values().map(|(r, _)| r).collect(),
        total,
    }
}

/// `YYYY-MM-DD` of the UTC day number `days` since 1970-01-01.
pub fn civil_date(days: i64) -> String {
    let (y, m, d) = berth_core::time::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parses a time given as epoch seconds (`1712345678`, `1712345678.5`), an RFC 3339 timestamp
/// (`2024-04-05T19:34:38Z`, `2024-04-05T19:34:38.250+02:00`) or a date (`2024-04-05`, midnight
/// UTC) into epoch seconds.
pub fn parse_time(s: &str) -> Result<f64, MeteringError> {
    let s = s.trim();
    let bad =
        || MeteringError::InvalidArgument(format!("not a time (epoch seconds or RFC 3339): {s:?}"));
    if let Ok(v) = s.parse::<f64>() {
        return if v.is_finite() { Ok(v) } else { Err(bad()) };
    }
    berth_core::time::parse_iso8601(s).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(
        arn: &str,
        cpu: u32,
        mem: u32,
        key: &str,
        start: f64,
        stop: Option<f64>,
    ) -> MeteredTask {
        MeteredTask {
            task_arn: arn.into(),
            cluster: "c".into(),
            service: None,
            cpu_units: cpu,
            memory_mib: mem,
            price_key: key.into(),
            created_at: start - 1.0,
            pull_started_at: Some(start),
            started_at: Some(start + 2.0),
            stopped_at: stop,
        }
    }

    #[test]
    fn one_minute_minimum_and_per_second_rounding() {
        let t = task("a", 256, 512, "FARGATE", 1000.0, Some(1010.5));
        assert_eq!(t.billed_seconds(0.0), 60);
        let t = task("a", 256, 512, "FARGATE", 1000.0, Some(1090.001));
        assert_eq!(t.billed_seconds(0.0), 91);
        let t = task("a", 256, 512, "FARGATE", 1000.0, Some(1090.0));
        assert_eq!(t.billed_seconds(0.0), 90);
        // Running: up to now.
        let t = task("a", 256, 512, "FARGATE", 1000.0, None);
        assert_eq!(t.billed_seconds(1200.2), 201);
    }

    #[test]
    fn billing_start_falls_back_to_started_then_created() {
        let mut t = task("a", 1024, 2048, "FARGATE", 1000.0, Some(2000.0));
        t.pull_started_at = None;
        assert_eq!(t.billing_start(), 1002.0);
        t.started_at = None;
        assert_eq!(t.billing_start(), 999.0);
    }

    #[test]
    fn prices_on_demand_and_spot() {
        let p = Pricing::default();
        let tasks = [
            task("od", 1024, 2048, "FARGATE", 0.0, Some(3600.0)),
            task("spot", 1024, 2048, "FARGATE_SPOT", 0.0, Some(3600.0)),
            task("ec2", 1024, 2048, "EC2", 0.0, Some(3600.0)),
        ];
        let r = report(&tasks, &p, 5000.0, None, None, GroupBy::Task);
        let by = |k: &str| r.rows.iter().find(|x| x.key == k).unwrap().clone();
        assert!((by("od").cost - (0.04048 + 2.0 * 0.004445)).abs() < 1e-12);
        assert!((by("spot").cost - (0.01334053 + 2.0 * 0.00146489)).abs() < 1e-12);
        assert_eq!(by("ec2").cost, 0.0);
        assert_eq!(by("od").vcpu_seconds, 3600.0);
        assert_eq!(by("od").gb_seconds, 7200.0);
        assert_eq!(r.total.tasks, 3);
        assert_eq!(r.total.seconds, 3.0 * 3600.0);
    }

    #[test]
    fn window_and_days_partition_exactly() {
        let p = Pricing::default();
        // 2 hours straddling midnight of day 1, and a short task.
        let tasks = [
            task("x", 512, 1024, "FARGATE", DAY - 3600.0, Some(DAY + 3600.0)),
            task("y", 256, 512, "FARGATE_SPOT", DAY + 10.0, Some(DAY + 12.0)),
        ];
        let whole = report(&tasks, &p, 1e9, None, None, GroupBy::Cluster);
        let days = report(&tasks, &p, 1e9, None, None, GroupBy::Day);
        assert_eq!(days.rows.len(), 2);
        assert_eq!(days.rows[0].key, "1970-01-01");
        assert_eq!(days.rows[0].seconds, 3600.0);
        assert_eq!(days.rows[1].seconds, 3600.0 + 60.0);
        assert_eq!(days.rows[1].tasks, 2);
        assert_eq!(days.total.tasks, 2);
        assert!((days.total.cost - whole.total.cost).abs() < 1e-12);
        let a = report(&tasks, &p, 1e9, None, Some(DAY), GroupBy::Task);
        let b = report(&tasks, &p, 1e9, Some(DAY), None, GroupBy::Task);
        assert!((a.total.cost + b.total.cost - whole.total.cost).abs() < 1e-12);
        assert_eq!(a.total.tasks, 1);
        assert_eq!(b.total.tasks, 2);
    }

    #[test]
    fn group_by_service_keys() {
        let mut t = task("x", 256, 512, "FARGATE", 0.0, Some(1.0));
        t.service = Some("web".into());
        let u = task("y", 256, 512, "FARGATE", 0.0, Some(1.0));
        let r = report(
            &[t, u],
            &Pricing::default(),
            10.0,
            None,
            None,
            GroupBy::Service,
        );
        let keys: Vec<_> = r.rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["c/-", "c/web"]);
    }

    #[test]
    fn pricing_file_overrides_defaults() {
        let p =
            Pricing::from_json(r#"{"rates":{"FARGATE":{"vcpu_per_hour":1.0,"gb_per_hour":0.5}}}"#)
                .unwrap();
        assert_eq!(p.rate("FARGATE").unwrap().vcpu_per_hour, 1.0);
        assert_eq!(
            p.rate("FARGATE_SPOT").unwrap().vcpu_per_hour,
            FARGATE_SPOT_VCPU_HOUR
        );
        assert_eq!(p.currency, "USD");
        assert!(
            Pricing::from_json(r#"{"rates":{"X":{"vcpu_per_hour":-1,"gb_per_hour":0}}}"#).is_err()
        );
        assert!(Pricing::from_json("nope").is_err());
    }

    #[test]
    fn parses_times() {
        assert_eq!(parse_time("1712345678").unwrap(), 1712345678.0);
        assert_eq!(parse_time("2024-04-05T19:34:38Z").unwrap(), 1712345678.0);
        assert_eq!(
            parse_time("2024-04-05T21:34:38.5+02:00").unwrap(),
            1712345678.5
        );
        assert_eq!(parse_time("1970-01-02").unwrap(), DAY);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2024-13-01").is_err());
        assert_eq!(civil_date(19818), "2024-04-05");
    }
}
