//! CloudWatch Logs operations (target prefix `Logs_20140328`): CreateLogGroup, CreateLogStream,
//! PutLogEvents, DescribeLogGroups, DescribeLogStreams, GetLogEvents, FilterLogEvents.
//! Times are epoch milliseconds. Container output arrives through the agent endpoints and is read
//! back here.

use berth_api::logs::*;
use berth_api::proto::{parse_body, AwsError};
use berth_store::logs::EventQuery;
use serde_json::{json, Value};

use crate::{store_err, ControlPlane};

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

/// `logGroupName` or the name inside `logGroupIdentifier` (a name or an ARN).
fn group_of(name: Option<String>, identifier: Option<String>) -> Result<String, AwsError> {
    if let Some(n) = name {
        return Ok(n);
    }
    let id = identifier.ok_or_else(|| {
        AwsError::invalid_parameter("Either logGroupName or logGroupIdentifier is required.")
    })?;
    Ok(match id.split_once(":log-group:") {
        Some((_, rest)) => rest.trim_end_matches(":*").to_string(),
        None => id,
    })
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

impl ControlPlane {
    /// Runs one CloudWatch Logs operation; `body` is the raw JSON request.
    pub async fn handle_logs(&self, operation: &str, body: &[u8]) -> Result<Value, AwsError> {
        match operation {
            "CreateLogGroup" => self.create_log_group(parse_body(body)?),
            "CreateLogStream" => self.create_log_stream(parse_body(body)?),
            "PutLogEvents" => self.put_log_events(parse_body(body)?),
            "DescribeLogGroups" => self.describe_log_groups(parse_body(body)?),
            "DescribeLogStreams" => self.describe_log_streams(parse_body(body)?),
            "GetLogEvents" => self.get_log_events(parse_body(body)?),
            "FilterLogEvents" => self.filter_log_events(parse_body(body)?),
            _ => Err(AwsError::unknown_operation("CloudWatch Logs", operation)),
        }
    }

    fn require_group(&self, group: &str) -> Result<(), AwsError> {
        if self.store.log_group_exists(group).map_err(store_err)? {
            Ok(())
        } else {
            Err(group_missing())
        }
    }

    fn create_log_group(&self, req: LogGroupRequest) -> Result<Value, AwsError> {
        if req.log_group_name.is_empty() || req.log_group_name.len() > 512 {
            return Err(AwsError::invalid_parameter("Invalid logGroupName."));
        }
        if !self
            .store
            .create_log_group(&req.log_group_name)
            .map_err(store_err)?
        {
            return Err(AwsError::client(
                "ResourceAlreadyExistsException",
                "The specified log group already exists",
            ));
        }
        Ok(json!({}))
    }

    fn create_log_stream(&self, req: CreateLogStreamRequest) -> Result<Value, AwsError> {
        self.require_group(&req.log_group_name)?;
        if !self
            .store
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
        self.require_group(&req.log_group_name)?;
        if self
            .store
            .log_streams(&req.log_group_name, &req.log_stream_name)
            .map_err(store_err)?
            .iter()
            .all(|s| s.name != req.log_stream_name)
        {
            return Err(stream_missing());
        }
        let events: Vec<(i64, String)> = req
            .log_events
            .into_iter()
            .map(|e| (e.timestamp, e.message))
            .collect();
        self.store
            .append_log_events(&req.log_group_name, &req.log_stream_name, &events)
            .map_err(store_err)?;
        Ok(json!({}))
    }

    fn describe_log_groups(&self, req: DescribeLogGroupsRequest) -> Result<Value, AwsError> {
        let max = limit(req.limit, 50)?;
        let after = req.next_token.clone();
        let groups: Vec<Value> = self
            .store
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
                json!({
                    "logGroupName": g.name,
                    "creationTime": g.created_at,
                    "metricFilterCount": 0,
                    "arn": self.scope.log_group(&g.name),
                    "logGroupArn": self.scope.log_group(&g.name).trim_end_matches(":*"),
                    "storedBytes": g.stored_bytes,
                    "logGroupClass": "STANDARD",
                })
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
        let group = group_of(req.log_group_name, req.log_group_identifier)?;
        self.require_group(&group)?;
        let max = limit(req.limit, 50)?;
        let by_time = req.order_by.as_deref() == Some("LastEventTime");
        if by_time && req.log_stream_name_prefix.is_some() {
            return Err(AwsError::invalid_parameter(
                "Cannot order by LastEventTime with a logStreamNamePrefix.",
            ));
        }
        let mut streams = self
            .store
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
        let group = group_of(req.log_group_name, req.log_group_identifier)?;
        self.require_group(&group)?;
        if self
            .store
            .log_streams(&group, &req.log_stream_name)
            .map_err(store_err)?
            .iter()
            .all(|s| s.name != req.log_stream_name)
        {
            return Err(stream_missing());
        }
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
        let events = self.store.log_events(&group, &q).map_err(store_err)?;
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
        let group = group_of(req.log_group_name, req.log_group_identifier)?;
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
            .store
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
