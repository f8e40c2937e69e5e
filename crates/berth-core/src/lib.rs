//! berth-core: the domain model without IO (DESIGN §2): ARNs and ids, CPU units and MiB, the
//! Fargate size table, image references, content digests, date/time helpers, task life-cycle
//! states.

pub mod arn;
pub mod digest;
pub mod fargate;
pub mod image_ref;
pub mod status;
pub mod time;

/// Seconds since the Unix epoch with millisecond precision, as ECS timestamps are serialised.
pub fn epoch_now() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}
