//! CloudWatch Logs request shapes (botocore `logs/2014-03-28`). Times are epoch milliseconds.

use serde::Deserialize;

/// `CreateLogGroup` / `DeleteLogGroup` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogGroupRequest {
    pub log_group_name: String,
}

/// `CreateLogStream` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateLogStreamRequest {
    pub log_group_name: String,
    pub log_stream_name: String,
}

/// `InputLogEvent`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InputLogEvent {
    pub timestamp: i64,
    pub message: String,
}

/// `PutLogEvents` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutLogEventsRequest {
    pub log_group_name: String,
    pub log_stream_name: String,
    pub log_events: Vec<InputLogEvent>,
}

/// `DescribeLogGroups` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeLogGroupsRequest {
    #[serde(default)]
    pub log_group_name_prefix: Option<String>,
    #[serde(default)]
    pub log_group_name_pattern: Option<String>,
    #[serde(default)]
    pub next_token: Option<String>,
    #[serde(default)]
    pub limit: Option<i64>,
}

/// `DescribeLogStreams` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeLogStreamsRequest {
    #[serde(default)]
    pub log_group_name: Option<String>,
    #[serde(default)]
    pub log_group_identifier: Option<String>,
    #[serde(default)]
    pub log_stream_name_prefix: Option<String>,
    #[serde(default)]
    pub order_by: Option<String>,
    #[serde(default)]
    pub descending: Option<bool>,
    #[serde(default)]
    pub next_token: Option<String>,
    #[serde(default)]
    pub limit: Option<i64>,
}

/// `GetLogEvents` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetLogEventsRequest {
    #[serde(default)]
    pub log_group_name: Option<String>,
    #[serde(default)]
    pub log_group_identifier: Option<String>,
    pub log_stream_name: String,
    #[serde(default)]
    pub start_time: Option<i64>,
    #[serde(default)]
    pub end_time: Option<i64>,
    #[serde(default)]
    pub next_token: Option<String>,
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub start_from_head: Option<bool>,
}

/// `FilterLogEvents` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterLogEventsRequest {
    #[serde(default)]
    pub log_group_name: Option<String>,
    #[serde(default)]
    pub log_group_identifier: Option<String>,
    #[serde(default)]
    pub log_stream_names: Option<Vec<String>>,
    #[serde(default)]
    pub log_stream_name_prefix: Option<String>,
    #[serde(default)]
    pub start_time: Option<i64>,
    #[serde(default)]
    pub end_time: Option<i64>,
    #[serde(default)]
    pub filter_pattern: Option<String>,
    #[serde(default)]
    pub next_token: Option<String>,
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub interleaved: Option<bool>,
}
