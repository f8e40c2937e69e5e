//! CloudWatch Logs operations (target prefix `Logs_20140328`, botocore `logs/2014-03-28`):
//! CreateLogGroup, DeleteLogGroup, CreateLogStream, DeleteLogStream, PutLogEvents,
//! DescribeLogGroups, DescribeLogStreams, GetLogEvents, FilterLogEvents, PutRetentionPolicy,
//! DeleteRetentionPolicy, TagResource, UntagResource, ListTagsForResource and the legacy
//! TagLogGroup, UntagLogGroup, ListTagsLogGroup. Times are epoch milliseconds. Container output
//! arrives through the agent endpoints and is read back here.
//!
//! Names follow the model's constraints: log group names 1-512 characters of
//! `[\.\-_/#A-Za-z0-9]`, log stream names 1-512 characters without `:` or `*`; a name outside
//! them is `InvalidParameterException` ("1 validation error detected: ..."), on every operation
//! that takes one.
//!
//! Retention: a group's `retentionInDays` (one of [`RETENTION_DAYS`]) makes events whose
//! timestamp is older expire; [`spawn_sweeper`] deletes them in bounded batches (and the events
//! of deleted groups and streams), so appends never wait long. PutLogEvents rejects events more
//! than 14 days old or older than the retention (`tooOldLogEventEndIndex`,
//! `expiredLogEventEndIndex`) and more than 2 hours ahead (`tooNewLogEventStartIndex`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_api::logs::*;
use berth_api::operation::{LogsOperation, Operation as _};
use berth_api::proto::{parse_body, AwsError};
use berth_apiserver::{AwsService, ErrorKind, ErrorTable, Input};
use berth_store::logs::{EventQuery, TagOutcome};
use serde_json::{json, Value};

use crate::{store_err, ControlPlane};

/// The values `retentionInDays` may take (botocore `Days`).
pub const RETENTION_DAYS: [i64; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];
/// Test-only: when set to N, a retention "day" lasts N seconds (and the sweeper runs every N/2
/// seconds), so a test sees events expire without waiting days. Never set it in production.
pub const TEST_DAY_ENV: &str = "BERTH_TEST_LOG_DAY_SECONDS";
const DAY_MS: i64 = 86_400_000;
/// PutLogEvents limits (botocore `PutLogEvents` documentation).
const MAX_PAST_MS: i64 = 14 * DAY_MS;
const MAX_FUTURE_MS: i64 = 2 * 3600 * 1000;
const MAX_SPAN_MS: i64 = DAY_MS;
const MAX_BATCH_BYTES: usize = 1_048_576;
const MAX_BATCH_EVENTS: usize = 10_000;
/// Tags per log group.
const MAX_TAGS: usize = 50;
/// Rows one sweep or purge transaction deletes at most: about 25 ms of holding the store
/// (measured: 200,000 expired events in 1 s, the slowest 2,000-row batch 48 ms, release build).
const SWEEP_BATCH: usize = 1_000;
const GROUP_PATTERN: &str = r"[\.\-_/#A-Za-z0-9]+";

/// Milliseconds in one retention day: a real day unless [`TEST_DAY_ENV`] is set.
pub fn retention_day_ms() -> i64 {
    static DAY: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *DAY.get_or_init(|| {
        std::env::var(TEST_DAY_ENV)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .map(|s| (s * 1000.0) as i64)
            .unwrap_or(DAY_MS)
    })
}

fn sweep_wake() -> &'static tokio::sync::Notify {
    static N: std::sync::OnceLock<tokio::sync::Notify> = std::sync::OnceLock::new();
    N.get_or_init(tokio::sync::Notify::new)
}

/// Starts the retention sweeper: every minute (or half a test day), and right after a retention
/// change, it deletes the events of deleted groups and streams and the events older than their
/// group's retention, `SWEEP_BATCH` rows per transaction, yielding between batches.
pub fn spawn_sweeper(cp: Arc<ControlPlane>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let every = if retention_day_ms() == DAY_MS {
        Duration::from_secs(60)
    } else {
        Duration::from_millis((retention_day_ms() / 2).max(100) as u64)
    };
    rt.spawn(async move {
        loop {
            let _ = tokio::time::timeout(every, sweep_wake().notified()).await;
            if let Err(e) = cp.sweep_logs().await {
                tracing::warn!(error = %e, "log retention sweep failed");
            }
        }
    });
}

fn group_missing() -> AwsError {
    AwsError::client(
        "ResourceNotFoundException",
        "The specified log group does not exist.",
    )
}

fn stream_missing() -> AwsError {
    AwsError::client(
        "ResourceNotFoundException",
        "The specified log stream does not exist.",
    )
}

fn bad_token() -> AwsError {
    AwsError::invalid_parameter("The specified nextToken is invalid.")
}

/// `InvalidParameterException` in the form AWS uses for model constraints.
fn constraint(field: &str, value: &str, what: &str) -> AwsError {
    let shown: String = value.chars().take(600).collect();
    AwsError::invalid_parameter(format!(
        "1 validation error detected: Value '{shown}' at '{field}' failed to satisfy constraint: {what}"
    ))
}

fn check_len(field: &str, v: &str, min: usize, max: usize) -> Result<(), AwsError> {
    let n = v.chars().count();
    if n < min {
        return Err(constraint(
            field,
            v,
            &format!("Member must have length greater than or equal to {min}"),
        ));
    }
    if n > max {
        return Err(constraint(
            field,
            v,
            &format!("Member must have length less than or equal to {max}"),
        ));
    }
    Ok(())
}

/// Log group names (`LogGroupName`): 1-512 characters of `[\.\-_/#A-Za-z0-9]`.
pub fn check_group_name(field: &str, v: &str) -> Result<(), AwsError> {
    check_len(field, v, 1, 512)?;
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ".-_/#".contains(c))
    {
        return Err(constraint(
            field,
            v,
            &format!("Member must satisfy regular expression pattern: {GROUP_PATTERN}"),
        ));
    }
    Ok(())
}

/// Log stream names (`LogStreamName`): 1-512 characters, no `:` or `*`.
pub fn check_stream_name(field: &str, v: &str) -> Result<(), AwsError> {
    check_len(field, v, 1, 512)?;
    if v.contains([':', '*']) {
        return Err(constraint(
            field,
            v,
            "Member must satisfy regular expression pattern: [^:*]*",
        ));
    }
    Ok(())
}

/// Tag keys and values (`TagKey`, `TagValue`): letters, numbers, spaces and `_.:/=+-@`.
fn tag_char(c: char) -> bool {
    c.is_alphanumeric() || (c.is_whitespace() && !c.is_control()) || "_.:/=+-@".contains(c)
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<Vec<(String, String)>, AwsError> {
    if tags.is_empty() {
        return Err(constraint(
            "tags",
            "{}",
            "Member must have length greater than or equal to 1",
        ));
    }
    if tags.len() > MAX_TAGS {
        return Err(constraint(
            "tags",
            &format!("{} tags", tags.len()),
            "Member must have length less than or equal to 50",
        ));
    }
    for (k, v) in tags {
        check_tag_key(k)?;
        check_len("tags", v, 0, 256)?;
        if !v.chars().all(tag_char) {
            return Err(constraint(
                "tags",
                v,
                r"Member must satisfy regular expression pattern: ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$",
            ));
        }
    }
    Ok(tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn check_tag_key(k: &str) -> Result<(), AwsError> {
    check_len("tagKeys", k, 1, 128)?;
    if !k.chars().all(tag_char) {
        return Err(constraint(
            "tagKeys",
            k,
            r"Member must satisfy regular expression pattern: ^([\p{L}\p{Z}\p{N}_.:/=+\-@]+)$",
        ));
    }
    if k.to_ascii_lowercase().starts_with("aws:") {
        return Err(AwsError::invalid_parameter(
            "Tag keys starting with 'aws:' are reserved for AWS use.",
        ));
    }
    Ok(())
}

fn too_many_tags() -> AwsError {
    AwsError::client(
        "TooManyTagsException",
        format!("A resource can have no more than {MAX_TAGS} tags."),
    )
}

fn tags_json(tags: Vec<(String, String)>) -> Value {
    Value::Object(tags.into_iter().map(|(k, v)| (k, json!(v))).collect())
}

fn limit(v: Option<i64>, max: i64) -> Result<usize, AwsError> {
    match v {
        None => Ok(max as usize),
        Some(n) if (1..=max).contains(&n) => Ok(n as usize),
        Some(_) => Err(AwsError::invalid_parameter(format!(
            "limit must be between 1 and {max}."
        ))),
    }
}

fn now_ms() -> i64 {
    (berth_core::epoch_now() * 1000.0) as i64
}

impl ControlPlane {
    /// Runs one CloudWatch Logs operation named `operation` (an unknown name gives
    /// `UnknownOperationException`); `body` is the raw JSON request.
    pub async fn handle_logs(&self, operation: &str, body: &[u8]) -> Result<Value, AwsError> {
        self.logs(LogsOperation::parse(operation)?, body).await
    }

    /// Runs CloudWatch Logs operation `op`; `body` is the raw JSON request.
    pub async fn logs(&self, op: LogsOperation, body: &[u8]) -> Result<Value, AwsError> {
        use LogsOperation as Op;
        match op {
            Op::CreateLogGroup => self.create_log_group(parse_body(body)?),
            Op::DeleteLogGroup => self.delete_log_group(parse_body(body)?).await,
            Op::CreateLogStream => self.create_log_stream(parse_body(body)?),
            Op::DeleteLogStream => self.delete_log_stream(parse_body(body)?).await,
            Op::PutLogEvents => self.put_log_events(parse_body(body)?),
            Op::DescribeLogGroups => self.describe_log_groups(parse_body(body)?),
            Op::DescribeLogStreams => self.describe_log_streams(parse_body(body)?),
            Op::GetLogEvents => self.get_log_events(parse_body(body)?),
            Op::FilterLogEvents => self.filter_log_events(parse_body(body)?),
            Op::PutRetentionPolicy => self.put_retention_policy(parse_body(body)?),
            Op::DeleteRetentionPolicy => self.delete_retention_policy(parse_body(body)?),
            Op::TagResource => {
                let r: TagResourceRequest = parse_body(body)?;
                let g = self.group_of_arn(&r.resource_arn)?;
                self.tag_group(&g, &r.tags)
            }
            Op::UntagResource => {
                let r: UntagResourceRequest = parse_body(body)?;
                let g = self.group_of_arn(&r.resource_arn)?;
                self.untag_group(&g, &r.tag_keys)
            }
            Op::ListTagsForResource => {
                let r: ListTagsForResourceRequest = parse_body(body)?;
                let g = self.group_of_arn(&r.resource_arn)?;
                self.list_group_tags(&g)
            }
            Op::TagLogGroup => {
                let r: TagLogGroupRequest = parse_body(body)?;
                check_group_name("logGroupName", &r.log_group_name)?;
                self.tag_group(&r.log_group_name, &r.tags)
            }
            Op::UntagLogGroup => {
                let r: UntagLogGroupRequest = parse_body(body)?;
                check_group_name("logGroupName", &r.log_group_name)?;
                self.untag_group(&r.log_group_name, &r.tags)
            }
            Op::ListTagsLogGroup => {
                let r: LogGroupRequest = parse_body(body)?;
                check_group_name("logGroupName", &r.log_group_name)?;
                self.list_group_tags(&r.log_group_name)
            }
        }
    }

    /// One sweep: purge the events of deleted groups and streams, then expire events past
    /// their group's retention, in bounded batches with a yield between them.
    pub async fn sweep_logs(&self) -> Result<usize, AwsError> {
        let mut total = 0;
        loop {
            let n = self.logs.purge_log_events(SWEEP_BATCH).map_err(store_err)?;
            total += n;
            if n < SWEEP_BATCH {
                break;
            }
            tokio::task::yield_now().await;
        }
        let day = retention_day_ms();
        loop {
            let n = self
                .logs
                .expire_log_events(now_ms(), day, SWEEP_BATCH)
                .map_err(store_err)?;
            total += n;
            if n < SWEEP_BATCH {
                break;
            }
            tokio::task::yield_now().await;
        }
        if total > 0 {
            tracing::debug!(events = total, "log events expired or purged");
        }
        Ok(total)
    }

    /// `logGroupName` or the name inside `logGroupIdentifier` (a name or a log group ARN).
    fn group_of(
        &self,
        name: Option<String>,
        identifier: Option<String>,
    ) -> Result<String, AwsError> {
        if let Some(n) = name {
            check_group_name("logGroupName", &n)?;
            return Ok(n);
        }
        let id = identifier.ok_or_else(|| {
            AwsError::invalid_parameter("Either logGroupName or logGroupIdentifier is required.")
        })?;
        if id.starts_with("arn:") {
            return self.group_of_arn(&id);
        }
        check_group_name("logGroupIdentifier", &id)?;
        Ok(id)
    }

    /// The group named by `arn:aws:logs:<region>:<account>:log-group:<name>` (with or without
    /// the trailing `:*`); another region or account's group does not exist here.
    fn group_of_arn(&self, arn: &str) -> Result<String, AwsError> {
        let bad = || {
            AwsError::invalid_parameter(format!(
                "Invalid ARN: {}",
                arn.chars().take(600).collect::<String>()
            ))
        };
        let rest = arn.strip_prefix("arn:aws:logs:").ok_or_else(bad)?;
        let mut parts = rest.splitn(3, ':');
        let (region, account, resource) = (
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
        );
        let Some(name) = resource.strip_prefix("log-group:") else {
            return Err(AwsError::client(
                "ResourceNotFoundException",
                "The specified resource does not exist.",
            ));
        };
        let name = name.strip_suffix(":*").unwrap_or(name);
        check_group_name("resourceArn", name)?;
        if region != self.scope.region || account != self.scope.account {
            return Err(group_missing());
        }
        Ok(name.to_string())
    }

    fn require_group(&self, group: &str) -> Result<berth_store::logs::LogGroup, AwsError> {
        self.logs
            .log_group(group)
            .map_err(store_err)?
            .ok_or_else(group_missing)
    }

    fn require_stream(&self, group: &str, stream: &str) -> Result<(), AwsError> {
        if self
            .logs
            .log_streams(group, stream)
            .map_err(store_err)?
            .iter()
            .any(|s| s.name == stream)
        {
            Ok(())
        } else {
            Err(stream_missing())
        }
    }

    fn create_log_group(&self, req: LogGroupRequest) -> Result<Value, AwsError> {
        check_group_name("logGroupName", &req.log_group_name)?;
        if req.log_group_name.to_ascii_lowercase().starts_with("aws/") {
            return Err(AwsError::invalid_parameter(
                "Log groups starting with AWS/ are reserved for AWS.",
            ));
        }
        let class = req.log_group_class.as_deref().unwrap_or("STANDARD");
        if !["STANDARD", "INFREQUENT_ACCESS", "DELIVERY"].contains(&class) {
            return Err(constraint(
                "logGroupClass",
                class,
                "Member must satisfy enum value set: [STANDARD, INFREQUENT_ACCESS, DELIVERY]",
            ));
        }
        if req.kms_key_id.is_some() {
            return Err(AwsError::invalid_parameter(
                "berth has no KMS keys: kmsKeyId is not supported.",
            ));
        }
        let tags = match &req.tags {
            Some(t) => check_tags(t)?,
            None => Vec::new(),
        };
        if !self
            .logs
            .create_log_group(&req.log_group_name, class, &tags)
            .map_err(store_err)?
        {
            return Err(AwsError::client(
                "ResourceAlreadyExistsException",
                "The specified log group already exists",
            ));
        }
        Ok(json!({}))
    }

    /// Purges queued events now, batch by batch (the group or stream is already gone).
    async fn purge_now(&self) -> Result<(), AwsError> {
        while self.logs.purge_log_events(SWEEP_BATCH).map_err(store_err)? == SWEEP_BATCH {
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    async fn delete_log_group(&self, req: LogGroupRequest) -> Result<Value, AwsError> {
        check_group_name("logGroupName", &req.log_group_name)?;
        if !self
            .logs
            .delete_log_group(&req.log_group_name)
            .map_err(store_err)?
        {
            return Err(group_missing());
        }
        self.purge_now().await?;
        Ok(json!({}))
    }

    async fn delete_log_stream(&self, req: CreateLogStreamRequest) -> Result<Value, AwsError> {
        check_group_name("logGroupName", &req.log_group_name)?;
        check_stream_name("logStreamName", &req.log_stream_name)?;
        self.require_group(&req.log_group_name)?;
        if !self
            .logs
            .delete_log_stream(&req.log_group_name, &req.log_stream_name)
            .map_err(store_err)?
        {
            return Err(stream_missing());
        }
        self.purge_now().await?;
        Ok(json!({}))
    }

    fn put_retention_policy(&self, req: PutRetentionPolicyRequest) -> Result<Value, AwsError> {
        check_group_name("logGroupName", &req.log_group_name)?;
        if !RETENTION_DAYS.contains(&req.retention_in_days) {
            let set: Vec<String> = RETENTION_DAYS.iter().map(|d| d.to_string()).collect();
            return Err(constraint(
                "retentionInDays",
                &req.retention_in_days.to_string(),
                &format!("Member must satisfy enum value set: [{}]", set.join(", ")),
            ));
        }
        if !self
            .logs
            .set_log_retention(&req.log_group_name, Some(req.retention_in_days))
            .map_err(store_err)?
        {
            return Err(group_missing());
        }
        sweep_wake().notify_one();
        Ok(json!({}))
    }

    fn delete_retention_policy(&self, req: LogGroupRequest) -> Result<Value, AwsError> {
        check_group_name("logGroupName", &req.log_group_name)?;
        if !self
            .logs
            .set_log_retention(&req.log_group_name, None)
            .map_err(store_err)?
        {
            return Err(group_missing());
        }
        Ok(json!({}))
    }

    fn tag_group(&self, group: &str, tags: &BTreeMap<String, String>) -> Result<Value, AwsError> {
        let tags = check_tags(tags)?;
        match self
            .logs
            .tag_log_group(group, &tags, MAX_TAGS)
            .map_err(store_err)?
        {
            TagOutcome::Tagged => Ok(json!({})),
            TagOutcome::NoSuchGroup => Err(group_missing()),
            TagOutcome::TooMany => Err(too_many_tags()),
        }
    }

    fn untag_group(&self, group: &str, keys: &[String]) -> Result<Value, AwsError> {
        if keys.len() > MAX_TAGS {
            return Err(constraint(
                "tagKeys",
                &format!("{} keys", keys.len()),
                "Member must have length less than or equal to 50",
            ));
        }
        for k in keys {
            check_len("tagKeys", k, 1, 128)?;
        }
        if !self.logs.untag_log_group(group, keys).map_err(store_err)? {
            return Err(group_missing());
        }
        Ok(json!({}))
    }

    fn list_group_tags(&self, group: &str) -> Result<Value, AwsError> {
        let tags = self
            .logs
            .log_group_tags(group)
            .map_err(store_err)?
            .ok_or_else(group_missing)?;
        Ok(json!({ "tags": tags_json(tags) }))
    }

    fn create_log_stream(&self, req: CreateLogStreamRequest) -> Result<Value, AwsError> {
        check_group_name("logGroupName", &req.log_group_name)?;
        check_stream_name("logStreamName", &req.log_stream_name)?;
        self.require_group(&req.log_group_name)?;
        if !self
            .logs
            .create_log_stream(&req.log_group_name, &req.log_stream_name)
            .map_err(store_err)?
        {
            return Err(AwsError::client(
                "ResourceAlreadyExistsException",
                "The specified log stream already exists",
            ));
        }
        Ok(json!({}))
    }

    fn put_log_events(&self, req: PutLogEventsRequest) -> Result<Value, AwsError> {
        check_group_name("logGroupName", &req.log_group_name)?;
        check_stream_name("logStreamName", &req.log_stream_name)?;
        let group = self.require_group(&req.log_group_name)?;
        self.require_stream(&req.log_group_name, &req.log_stream_name)?;
        let events = req.log_events;
        if events.is_empty() || events.len() > MAX_BATCH_EVENTS {
            return Err(constraint(
                "logEvents",
                &format!("{} events", events.len()),
                &format!("Member must have length between 1 and {MAX_BATCH_EVENTS}"),
            ));
        }
        let size: usize = events.iter().map(|e| e.message.len() + 26).sum();
        if size > MAX_BATCH_BYTES {
            return Err(AwsError::invalid_parameter(format!(
                "Upload too large: {size} bytes exceeds limit of {MAX_BATCH_BYTES}"
            )));
        }
        if events.windows(2).any(|w| w[1].timestamp < w[0].timestamp) {
            return Err(AwsError::invalid_parameter(
                "Log events in a single PutLogEvents request must be in chronological order.",
            ));
        }
        let now = now_ms();
        // Sorted by time, so each rejected kind is a prefix (too old, expired) or a suffix
        // (too new) of the batch.
        let count_before = |limit: i64| events.iter().take_while(|e| e.timestamp < limit).count();
        let too_old_end = count_before(now - MAX_PAST_MS);
        let expired_end = group
            .retention_days
            .map(|d| count_before(now - d * retention_day_ms()))
            .unwrap_or(0);
        let too_new_start = events
            .iter()
            .position(|e| e.timestamp > now + MAX_FUTURE_MS)
            .unwrap_or(events.len());
        let first = too_old_end.max(expired_end).min(too_new_start);
        let valid = &events[first..too_new_start];
        if let (Some(a), Some(b)) = (valid.first(), valid.last()) {
            if b.timestamp - a.timestamp > MAX_SPAN_MS {
                return Err(AwsError::invalid_parameter(
                    "The batch of log events in a single PutLogEvents request cannot span more than 24 hours.",
                ));
            }
        }
        let rows: Vec<(i64, String)> = valid
            .iter()
            .map(|e| (e.timestamp, e.message.clone()))
            .collect();
        if !rows.is_empty() {
            self.logs
                .append_log_events(&req.log_group_name, &req.log_stream_name, &rows)
                .map_err(store_err)?;
        }
        let mut rejected = serde_json::Map::new();
        if too_old_end > 0 {
            rejected.insert("tooOldLogEventEndIndex".into(), json!(too_old_end));
        }
        if expired_end > 0 {
            rejected.insert("expiredLogEventEndIndex".into(), json!(expired_end));
        }
        if too_new_start < events.len() {
            rejected.insert("tooNewLogEventStartIndex".into(), json!(too_new_start));
        }
        let mut out = json!({ "nextSequenceToken": format!("{now:056}") });
        if !rejected.is_empty() {
            out["rejectedLogEventsInfo"] = Value::Object(rejected);
        }
        Ok(out)
    }

    fn describe_log_groups(&self, req: DescribeLogGroupsRequest) -> Result<Value, AwsError> {
        let max = limit(req.limit, 50)?;
        if req.log_group_name_prefix.is_some() && req.log_group_name_pattern.is_some() {
            return Err(AwsError::invalid_parameter(
                "LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters.",
            ));
        }
        if let Some(p) = &req.log_group_name_prefix {
            check_group_name("logGroupNamePrefix", p)?;
        }
        if let Some(p) = &req.log_group_name_pattern {
            check_len("logGroupNamePattern", p, 0, 512)?;
            if !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_/#".contains(c))
            {
                return Err(constraint(
                    "logGroupNamePattern",
                    p,
                    r"Member must satisfy regular expression pattern: [\.\-_/#A-Za-z0-9]*",
                ));
            }
        }
        let after = req.next_token.clone();
        let groups: Vec<Value> = self
            .logs
            .log_groups(req.log_group_name_prefix.as_deref().unwrap_or(""))
            .map_err(store_err)?
            .into_iter()
            .filter(|g| {
                req.log_group_name_pattern
                    .as_ref()
                    .is_none_or(|p| g.name.contains(p.as_str()))
            })
            .filter(|g| after.as_ref().is_none_or(|a| g.name.as_str() > a.as_str()))
            .map(|g| {
                let mut v = json!({
                    "logGroupName": g.name,
                    "creationTime": g.created_at,
                    "metricFilterCount": 0,
                    "arn": self.scope.log_group(&g.name),
                    "logGroupArn": self.scope.log_group(&g.name).trim_end_matches(":*"),
                    "storedBytes": g.stored_bytes,
                    "logGroupClass": g.class,
                });
                if let Some(d) = g.retention_days {
                    v["retentionInDays"] = json!(d);
                }
                v
            })
            .collect();
        let more = groups.len() > max;
        let page: Vec<Value> = groups.into_iter().take(max).collect();
        let next = if more {
            page.last().map(|g| g["logGroupName"].clone())
        } else {
            None
        };
        Ok(json!({ "logGroups": page, "nextToken": next }))
    }

    fn describe_log_streams(&self, req: DescribeLogStreamsRequest) -> Result<Value, AwsError> {
        let group = self.group_of(req.log_group_name, req.log_group_identifier)?;
        if let Some(p) = &req.log_stream_name_prefix {
            check_stream_name("logStreamNamePrefix", p)?;
        }
        self.require_group(&group)?;
        let max = limit(req.limit, 50)?;
        let by_time = req.order_by.as_deref() == Some("LastEventTime");
        if by_time && req.log_stream_name_prefix.is_some() {
            return Err(AwsError::invalid_parameter(
                "Cannot order by LastEventTime with a logStreamNamePrefix.",
            ));
        }
        let mut streams = self
            .logs
            .log_streams(&group, req.log_stream_name_prefix.as_deref().unwrap_or(""))
            .map_err(store_err)?;
        if by_time {
            streams.sort_by_key(|s| (s.last_ts.unwrap_or(0), s.name.clone()));
        }
        if req.descending.unwrap_or(false) {
            streams.reverse();
        }
        let start: usize = match &req.next_token {
            Some(t) => t.parse().map_err(|_| bad_token())?,
            None => 0,
        };
        let total = streams.len();
        let page: Vec<Value> = streams
            .into_iter()
            .skip(start)
            .take(max)
            .map(|s| {
                json!({
                    "logStreamName": s.name,
                    "creationTime": s.created_at,
                    "firstEventTimestamp": s.first_ts,
                    "lastEventTimestamp": s.last_ts,
                    "lastIngestionTime": s.last_ingestion,
                    "arn": self.scope.log_stream(&group, &s.name),
                    "storedBytes": 0,
                })
            })
            .collect();
        let next = (start + max < total).then(|| (start + max).to_string());
        Ok(json!({ "logStreams": page, "nextToken": next }))
    }

    fn get_log_events(&self, req: GetLogEventsRequest) -> Result<Value, AwsError> {
        let group = self.group_of(req.log_group_name, req.log_group_identifier)?;
        check_stream_name("logStreamName", &req.log_stream_name)?;
        self.require_group(&group)?;
        self.require_stream(&group, &req.log_stream_name)?;
        let mut q = EventQuery {
            streams: vec![req.log_stream_name.clone()],
            start_time: req.start_time,
            end_time: req.end_time,
            limit: limit(req.limit, 10_000)?,
            backward: !req.start_from_head.unwrap_or(false),
            ..Default::default()
        };
        match req.next_token.as_deref() {
            None => {}
            Some(t) => {
                let (dir, id) = t.split_once('/').ok_or_else(bad_token)?;
                let id: i64 = id.parse().map_err(|_| bad_token())?;
                match dir {
                    "f" => {
                        q.after_id = Some(id);
                        q.backward = false;
                    }
                    "b" => {
                        q.before_id = Some(id);
                        q.backward = true;
                    }
                    _ => return Err(bad_token()),
                }
            }
        }
        let events = self.logs.log_events(&group, &q).map_err(store_err)?;
        let (first, last) = match (events.first(), events.last()) {
            (Some(f), Some(l)) => (f.id, l.id + 1),
            // Nothing new: hand the caller's position back, as CloudWatch does.
            _ => {
                let pos = q.after_id.map(|i| i + 1).or(q.before_id).unwrap_or(0);
                (pos, pos.max(1) - 1 + 1)
            }
        };
        let out: Vec<Value> = events
            .iter()
            .map(|e| json!({"timestamp": e.timestamp, "message": e.message, "ingestionTime": e.ingestion_time}))
            .collect();
        Ok(json!({
            "events": out,
            "nextForwardToken": format!("f/{}", last - 1),
            "nextBackwardToken": format!("b/{first}"),
        }))
    }

    fn filter_log_events(&self, req: FilterLogEventsRequest) -> Result<Value, AwsError> {
        let group = self.group_of(req.log_group_name, req.log_group_identifier)?;
        for n in req.log_stream_names.iter().flatten() {
            check_stream_name("logStreamNames", n)?;
        }
        if let Some(p) = &req.log_stream_name_prefix {
            check_stream_name("logStreamNamePrefix", p)?;
        }
        self.require_group(&group)?;
        if req.log_stream_names.is_some() && req.log_stream_name_prefix.is_some() {
            return Err(AwsError::invalid_parameter(
                "logStreamNames and logStreamNamePrefix are mutually exclusive.",
            ));
        }
        let max = limit(req.limit, 10_000)?;
        let terms: Vec<String> = req
            .filter_pattern
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(|t| t.trim_matches('"').to_string())
            .filter(|t| !t.is_empty())
            .collect();
        let after_id = match &req.next_token {
            Some(t) => Some(t.parse::<i64>().map_err(|_| bad_token())?),
            None => None,
        };
        let q = EventQuery {
            streams: req.log_stream_names.clone().unwrap_or_default(),
            stream_prefix: req.log_stream_name_prefix.clone(),
            start_time: req.start_time,
            end_time: req.end_time,
            contains: terms.first().cloned(),
            after_id,
            limit: max,
            ..Default::default()
        };
        let events: Vec<_> = self
            .logs
            .log_events(&group, &q)
            .map_err(store_err)?
            .into_iter()
            .filter(|e| terms.iter().all(|t| e.message.contains(t.as_str())))
            .collect();
        let next = (events.len() == max)
            .then(|| events.last().map(|e| e.id.to_string()))
            .flatten();
        let out: Vec<Value> = events
            .iter()
            .map(|e| {
                json!({
                    "logStreamName": e.stream,
                    "timestamp": e.timestamp,
                    "message": e.message,
                    "ingestionTime": e.ingestion_time,
                    "eventId": format!("{:056}", e.id),
                })
            })
            .collect();
        Ok(json!({ "events": out, "searchedLogStreams": [], "nextToken": next }))
    }
}

/// CloudWatch Logs' error names (botocore `logs/2014-03-28`).
pub static ERRORS: ErrorTable = ErrorTable {
    rows: &[],
    defaults: &[
        (ErrorKind::NotFound, "ResourceNotFoundException", 400),
        (
            ErrorKind::AlreadyExists,
            "ResourceAlreadyExistsException",
            400,
        ),
        (ErrorKind::InvalidArgument, "InvalidParameterException", 400),
        (ErrorKind::Conflict, "OperationAbortedException", 400),
        (ErrorKind::LimitExceeded, "LimitExceededException", 400),
        (ErrorKind::Unauthorized, "AccessDeniedException", 400),
        (ErrorKind::Unsupported, "InvalidOperationException", 400),
        (ErrorKind::Internal, "ServerException", 500),
    ],
};

/// CloudWatch Logs as an [`AwsService`] (awsJson1.1, target prefix `Logs_20140328`, signing
/// name `logs`).
pub struct LogsApi(pub Arc<ControlPlane>);

impl AwsService for LogsApi {
    type Operation = LogsOperation;
    fn signing_name(&self) -> &'static str {
        "logs"
    }
    fn json_target_prefix(&self) -> &'static str {
        berth_api::proto::LOGS_PREFIX
    }
    fn errors(&self) -> &'static ErrorTable {
        &ERRORS
    }
    async fn call(&self, op: LogsOperation, input: Input<'_>) -> Result<Value, AwsError> {
        self.0.logs(op, &input.json_bytes()).await
    }
}
