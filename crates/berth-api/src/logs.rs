//! CloudWatch Logs request shapes (botocore `logs/2014-03-28`). Times are epoch milliseconds.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `CreateLogGroup` / `DeleteLogGroup` / `DeleteRetentionPolicy` / `ListTagsLogGroup` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogGroupRequest {
    pub log_group_name: String,
    /// CreateLogGroup only: tags (`Tags`, 1-50 entries).
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    /// CreateLogGroup only: `STANDARD` (default), `INFREQUENT_ACCESS` or `DELIVERY`.
    #[serde(default)]
    pub log_group_class: Option<String>,
    /// CreateLogGroup only: a KMS key (berth has no KMS: refused when set).
    #[serde(default)]
    pub kms_key_id: Option<String>,
}

/// `PutRetentionPolicy` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutRetentionPolicyRequest {
    pub log_group_name: String,
    /// Days (`Days`: one of 1, 3, 5, 7, 14, 30, ... 3653).
    pub retention_in_days: i64,
}

/// `TagResource` request (log group ARN, with or without the trailing `:*`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagResourceRequest {
    pub resource_arn: String,
    pub tags: BTreeMap<String, String>,
}

/// `UntagResource` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UntagResourceRequest {
    pub resource_arn: String,
    pub tag_keys: Vec<String>,
}

/// `ListTagsForResource` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTagsForResourceRequest {
    pub resource_arn: String,
}

/// Legacy `TagLogGroup` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagLogGroupRequest {
    pub log_group_name: String,
    pub tags: BTreeMap<String, String>,
}

/// Legacy `UntagLogGroup` request (`tags` is the list of keys to remove).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UntagLogGroupRequest {
    pub log_group_name: String,
    pub tags: Vec<String>,
}

/// `CreateLogStream` / `DeleteLogStream` request.
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
