//! CloudWatch Logs storage: log groups, log streams and their events (append-only).
//!
//! Timestamps are milliseconds since the Unix epoch, as in the CloudWatch Logs API. Event ids are
//! monotonically increasing integers, which the API layer turns into pagination tokens.

use rusqlite::{params, Connection, OptionalExtension};

use crate::{Result, SqliteStore};

pub(crate) fn init(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS log_groups(name TEXT PRIMARY KEY, created_at INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS log_streams(grp TEXT NOT NULL, name TEXT NOT NULL,
            created_at INTEGER NOT NULL, first_ts INTEGER, last_ts INTEGER, last_ingestion INTEGER,
            PRIMARY KEY(grp, name));
         CREATE TABLE IF NOT EXISTS log_events(id INTEGER PRIMARY KEY AUTOINCREMENT, grp TEXT NOT NULL,
            stream TEXT NOT NULL, ts INTEGER NOT NULL, ingestion INTEGER NOT NULL, message TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS log_events_stream ON log_events(grp, stream, ts, id);",
    )
}

/// A log group (CloudWatch Logs `LogGroup`).
#[derive(Debug, Clone)]
pub struct LogGroup {
    pub name: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Bytes of message text stored in the group.
    pub stored_bytes: i64,
}

/// A log stream (CloudWatch Logs `LogStream`).
#[derive(Debug, Clone)]
pub struct LogStream {
    pub group: String,
    pub name: String,
    pub created_at: i64,
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
    pub last_ingestion: Option<i64>,
}

/// A stored log event.
#[derive(Debug, Clone)]
pub struct LogEvent {
    /// Monotonic id (pagination position).
    pub id: i64,
    pub stream: String,
    /// Event time, milliseconds since the epoch.
    pub timestamp: i64,
    /// Time berth stored it, milliseconds since the epoch.
    pub ingestion_time: i64,
    pub message: String,
}

/// A query over the events of one group.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only these streams (empty = all streams of the group).
    pub streams: Vec<String>,
    /// Only streams whose name starts with this.
    pub stream_prefix: Option<String>,
    /// Inclusive lower bound on the event timestamp (ms).
    pub start_time: Option<i64>,
    /// Exclusive upper bound on the event timestamp (ms).
    pub end_time: Option<i64>,
    /// Only events whose message contains this text.
    pub contains: Option<String>,
    /// Resume strictly after (forward) or before (backward) this event id.
    pub after_id: Option<i64>,
    pub before_id: Option<i64>,
    /// Newest first when true (the result is still returned oldest first).
    pub backward: bool,
    pub limit: usize,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl SqliteStore {
    /// Creates a log group; returns false when it already existed.
    pub fn create_log_group(&self, name: &str) -> Result<bool> {
        let conn = self.lock();
        let n = conn.execute(
            "INSERT OR IGNORE INTO log_groups(name, created_at) VALUES(?1, ?2)",
            params![name, now_ms()],
        )?;
        Ok(n == 1)
    }

    /// Creates a log stream in an existing group; returns false when it already existed.
    pub fn create_log_stream(&self, group: &str, name: &str) -> Result<bool> {
        let conn = self.lock();
        let n = conn.execute(
            "INSERT OR IGNORE INTO log_streams(grp, name, created_at) VALUES(?1, ?2, ?3)",
            params![group, name, now_ms()],
        )?;
        Ok(n == 1)
    }

    /// Lists log groups whose name starts with `prefix`, ordered by name.
    pub fn log_groups(&self, prefix: &str) -> Result<Vec<LogGroup>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT g.name, g.created_at,
                    (SELECT COALESCE(SUM(length(message)), 0) FROM log_events e WHERE e.grp = g.name)
             FROM log_groups g WHERE substr(g.name, 1, length(?1)) = ?1 ORDER BY g.name",
        )?;
        let rows = stmt.query_map(params![prefix], |r| {
            Ok(LogGroup {
                name: r.get(0)?,
                created_at: r.get(1)?,
                stored_bytes: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// True when the group exists.
    pub fn log_group_exists(&self, name: &str) -> Result<bool> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT 1 FROM log_groups WHERE name=?1",
                params![name],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Lists the streams of `group` whose name starts with `prefix`, ordered by name.
    pub fn log_streams(&self, group: &str, prefix: &str) -> Result<Vec<LogStream>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT grp, name, created_at, first_ts, last_ts, last_ingestion FROM log_streams
             WHERE grp=?1 AND substr(name, 1, length(?2)) = ?2 ORDER BY name",
        )?;
        let rows = stmt.query_map(params![group, prefix], |r| {
            Ok(LogStream {
                group: r.get(0)?,
                name: r.get(1)?,
                created_at: r.get(2)?,
                first_ts: r.get(3)?,
                last_ts: r.get(4)?,
                last_ingestion: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Appends events `(timestamp_ms, message)` to `group/stream`, creating both when missing.
    pub fn append_log_events(
        &self,
        group: &str,
        stream: &str,
        events: &[(i64, String)],
    ) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let now = now_ms();
        tx.execute(
            "INSERT OR IGNORE INTO log_groups(name, created_at) VALUES(?1, ?2)",
            params![group, now],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO log_streams(grp, name, created_at) VALUES(?1, ?2, ?3)",
            params![group, stream, now],
        )?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO log_events(grp, stream, ts, ingestion, message) VALUES(?1, ?2, ?3, ?4, ?5)",
            )?;
            for (ts, msg) in events {
                ins.execute(params![group, stream, ts, now, msg])?;
            }
        }
        if let (Some(min), Some(max)) = (
            events.iter().map(|e| e.0).min(),
            events.iter().map(|e| e.0).max(),
        ) {
            tx.execute(
                "UPDATE log_streams SET first_ts = MIN(COALESCE(first_ts, ?3), ?3),
                    last_ts = MAX(COALESCE(last_ts, ?4), ?4), last_ingestion = ?5
                 WHERE grp=?1 AND name=?2",
                params![group, stream, min, max, now],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Runs an event query over one group; results are ordered oldest first.
    pub fn log_events(&self, group: &str, q: &EventQuery) -> Result<Vec<LogEvent>> {
        let conn = self.lock();
        let mut sql = String::from(
            "SELECT id, stream, ts, ingestion, message FROM log_events WHERE grp = ?1",
        );
        let mut args: Vec<rusqlite::types::Value> = vec![group.to_string().into()];
        fn arg(
            sql: &mut String,
            args: &mut Vec<rusqlite::types::Value>,
            clause: &str,
            v: rusqlite::types::Value,
        ) {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        }
        if !q.streams.is_empty() {
            sql.push_str(" AND stream IN (");
            for (i, s) in q.streams.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                arg(&mut sql, &mut args, "?", s.clone().into());
            }
            sql.push(')');
        }
        if let Some(p) = &q.stream_prefix {
            arg(
                &mut sql,
                &mut args,
                " AND substr(stream, 1, length(?)) = ?",
                p.clone().into(),
            );
        }
        if let Some(t) = q.start_time {
            arg(&mut sql, &mut args, " AND ts >= ?", t.into());
        }
        if let Some(t) = q.end_time {
            arg(&mut sql, &mut args, " AND ts < ?", t.into());
        }
        if let Some(c) = &q.contains {
            arg(
                &mut sql,
                &mut args,
                " AND instr(message, ?) > 0",
                c.clone().into(),
            );
        }
        if let Some(id) = q.after_id {
            arg(&mut sql, &mut args, " AND id > ?", id.into());
        }
        if let Some(id) = q.before_id {
            arg(&mut sql, &mut args, " AND id < ?", id.into());
        }
        let limit = q.limit.clamp(1, 10_000);
        sql.push_str(if q.backward {
            " ORDER BY ts DESC, id DESC"
        } else {
            " ORDER BY ts, id"
        });
        sql.push_str(&format!(" LIMIT {limit}"));
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
            Ok(LogEvent {
                id: r.get(0)?,
                stream: r.get(1)?,
                timestamp: r.get(2)?,
                ingestion_time: r.get(3)?,
                message: r.get(4)?,
            })
        })?;
        let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        if q.backward {
            out.reverse();
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_and_query() {
        let s = SqliteStore::open_in_memory().unwrap();
        s.append_log_events(
            "/ecs/x",
            "p/c/1",
            &[(1, "hello".into()), (2, "world".into())],
        )
        .unwrap();
        s.append_log_events("/ecs/x", "p/c/2", &[(3, "other".into())])
            .unwrap();
        let all = s
            .log_events(
                "/ecs/x",
                &EventQuery {
                    limit: 100,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(all.len(), 3);
        let q = EventQuery {
            streams: vec!["p/c/1".into()],
            contains: Some("wor".into()),
            limit: 100,
            ..Default::default()
        };
        let ev = s.log_events("/ecs/x", &q).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].message, "world");
        let q = EventQuery {
            stream_prefix: Some("p/c/2".into()),
            limit: 100,
            ..Default::default()
        };
        assert_eq!(s.log_events("/ecs/x", &q).unwrap().len(), 1);
        let streams = s.log_streams("/ecs/x", "p/").unwrap();
        assert_eq!(streams.len(), 2);
        assert_eq!(streams[0].first_ts, Some(1));
        assert_eq!(s.log_groups("/ecs").unwrap()[0].stored_bytes, 15);
    }
}
