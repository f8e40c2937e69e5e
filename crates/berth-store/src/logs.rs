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
         CREATE INDEX IF NOT EXISTS log_events_stream ON log_events(grp, stream, ts, id);
         CREATE TABLE IF NOT EXISTS log_group_tags(grp TEXT NOT NULL, key TEXT NOT NULL,
            value TEXT NOT NULL, PRIMARY KEY(grp, key)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS log_purges(grp TEXT NOT NULL, stream TEXT NOT NULL,
            max_id INTEGER NOT NULL, PRIMARY KEY(grp, stream)) WITHOUT ROWID;",
    )?;
    // Columns added after the first release: retention, the log class and byte counters kept
    // on write (so DescribeLogGroups does not sum every event).
    if !has_column(conn, "log_groups", "stored_bytes")? {
        conn.execute_batch(
            "ALTER TABLE log_groups ADD COLUMN retention_days INTEGER;
             ALTER TABLE log_groups ADD COLUMN class TEXT NOT NULL DEFAULT 'STANDARD';
             ALTER TABLE log_groups ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0;
             UPDATE log_groups SET stored_bytes = (SELECT COALESCE(SUM(length(CAST(message AS BLOB))), 0)
                FROM log_events e WHERE e.grp = log_groups.name);",
        )?;
    }
    if !has_column(conn, "log_streams", "stored_bytes")? {
        conn.execute_batch(
            "ALTER TABLE log_streams ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0;
             UPDATE log_streams SET stored_bytes = (SELECT COALESCE(SUM(length(CAST(message AS BLOB))), 0)
                FROM log_events e WHERE e.grp = log_streams.grp AND e.stream = log_streams.name);",
        )?;
    }
    Ok(())
}

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = stmt.query_map([], |r| r.get::<_, String>(1))?;
    for n in names {
        if n? == column {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A log group (CloudWatch Logs `LogGroup`).
#[derive(Debug, Clone)]
pub struct LogGroup {
    pub name: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Bytes (UTF-8) of message text stored in the group.
    pub stored_bytes: i64,
    /// Days events are kept (`retentionInDays`); `None` keeps them forever.
    pub retention_days: Option<i64>,
    /// Log class (`STANDARD` or `INFREQUENT_ACCESS`).
    pub class: String,
}

/// What [`LogStore::tag_log_group`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagOutcome {
    /// The tags were merged in.
    Tagged,
    /// The group does not exist.
    NoSuchGroup,
    /// The merged set would exceed the limit; nothing changed.
    TooMany,
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

fn group_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LogGroup> {
    Ok(LogGroup {
        name: r.get(0)?,
        created_at: r.get(1)?,
        stored_bytes: r.get(2)?,
        retention_days: r.get(3)?,
        class: r.get(4)?,
    })
}

/// Whether log group `name` exists (on a connection or inside a transaction).
fn group_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM log_groups WHERE name=?1",
            params![name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// CloudWatch Logs storage: groups, streams and their append-only events (DESIGN §2: beside the
/// [`crate::Store`], never in etcd). Implemented by [`SqliteStore`].
pub trait LogStore: Send + Sync {
    /// Creates a log group of log class `class` with `tags`; returns false when it already
    /// existed (nothing changes then).
    fn create_log_group(&self, name: &str, class: &str, tags: &[(String, String)]) -> Result<bool>;

    /// One log group by exact name.
    fn log_group(&self, name: &str) -> Result<Option<LogGroup>>;

    /// Sets (`Some(days)`) or removes (`None`) the retention of a group; false when the group
    /// does not exist.
    fn set_log_retention(&self, name: &str, days: Option<i64>) -> Result<bool>;

    /// Deletes a group, its streams and tags at once; its events are queued for purging
    /// ([`LogStore::purge_log_events`]). False when the group does not exist.
    fn delete_log_group(&self, name: &str) -> Result<bool>;

    /// Deletes one stream (its bytes leave the group's count); its events are queued for
    /// purging. False when the stream does not exist.
    fn delete_log_stream(&self, group: &str, name: &str) -> Result<bool>;

    /// Deletes up to `max_rows` events of deleted groups and streams in one short transaction;
    /// returns how many went. Call again while it returns `max_rows`.
    fn purge_log_events(&self, max_rows: usize) -> Result<usize>;

    /// Deletes up to `max_rows` events whose timestamp is older than their group's retention
    /// (`retention_days * day_ms` before `now_ms`) in one short transaction, oldest first, and
    /// takes their bytes off the stream's and group's counts. Returns how many went; call again
    /// while it returns `max_rows`.
    fn expire_log_events(&self, now_ms: i64, day_ms: i64, max_rows: usize) -> Result<usize>;

    /// The tags of a group, ordered by key; `None` when the group does not exist.
    fn log_group_tags(&self, name: &str) -> Result<Option<Vec<(String, String)>>>;

    /// Adds or replaces tags of a group, unless the merged set would exceed `max` tags.
    fn tag_log_group(
        &self,
        name: &str,
        tags: &[(String, String)],
        max: usize,
    ) -> Result<TagOutcome>;

    /// Removes tags of a group by key; false when the group does not exist.
    fn untag_log_group(&self, name: &str, keys: &[String]) -> Result<bool>;

    /// Creates a log stream in an existing group; returns false when it already existed.
    fn create_log_stream(&self, group: &str, name: &str) -> Result<bool>;

    /// Lists log groups whose name starts with `prefix`, ordered by name.
    fn log_groups(&self, prefix: &str) -> Result<Vec<LogGroup>>;

    /// True when the group exists.
    fn log_group_exists(&self, name: &str) -> Result<bool>;

    /// Lists the streams of `group` whose name starts with `prefix`, ordered by name.
    fn log_streams(&self, group: &str, prefix: &str) -> Result<Vec<LogStream>>;

    /// Appends events `(timestamp_ms, message)` to `group/stream`, creating both when missing.
    fn append_log_events(&self, group: &str, stream: &str, events: &[(i64, String)]) -> Result<()>;

    /// Runs an event query over one group; results are ordered oldest first.
    fn log_events(&self, group: &str, q: &EventQuery) -> Result<Vec<LogEvent>>;
}

impl LogStore for SqliteStore {
    fn create_log_group(&self, name: &str, class: &str, tags: &[(String, String)]) -> Result<bool> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO log_groups(name, created_at, class) VALUES(?1, ?2, ?3)",
            params![name, now_ms(), class],
        )?;
        if n == 1 {
            // Leftovers of an earlier group of this name (never visible without the group).
            tx.execute("DELETE FROM log_group_tags WHERE grp=?1", params![name])?;
            for (k, v) in tags {
                tx.execute(
                    "INSERT OR REPLACE INTO log_group_tags(grp, key, value) VALUES(?1, ?2, ?3)",
                    params![name, k, v],
                )?;
            }
        }
        tx.commit()?;
        Ok(n == 1)
    }

    fn log_group(&self, name: &str) -> Result<Option<LogGroup>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT name, created_at, stored_bytes, retention_days, class FROM log_groups
                 WHERE name=?1",
                params![name],
                group_row,
            )
            .optional()?)
    }

    fn set_log_retention(&self, name: &str, days: Option<i64>) -> Result<bool> {
        let conn = self.lock();
        let n = conn.execute(
            "UPDATE log_groups SET retention_days=?2 WHERE name=?1",
            params![name, days],
        )?;
        Ok(n == 1)
    }

    fn delete_log_group(&self, name: &str) -> Result<bool> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if tx.execute("DELETE FROM log_groups WHERE name=?1", params![name])? == 0 {
            return Ok(false);
        }
        tx.execute(
            "INSERT OR REPLACE INTO log_purges(grp, stream, max_id)
             SELECT grp, name, (SELECT COALESCE(MAX(id), 0) FROM log_events) FROM log_streams
             WHERE grp=?1",
            params![name],
        )?;
        tx.execute("DELETE FROM log_streams WHERE grp=?1", params![name])?;
        tx.execute("DELETE FROM log_group_tags WHERE grp=?1", params![name])?;
        tx.commit()?;
        Ok(true)
    }

    fn delete_log_stream(&self, group: &str, name: &str) -> Result<bool> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let bytes: Option<i64> = tx
            .query_row(
                "DELETE FROM log_streams WHERE grp=?1 AND name=?2 RETURNING stored_bytes",
                params![group, name],
                |r| r.get(0),
            )
            .optional()?;
        let Some(bytes) = bytes else {
            return Ok(false);
        };
        tx.execute(
            "UPDATE log_groups SET stored_bytes = MAX(stored_bytes - ?2, 0) WHERE name=?1",
            params![group, bytes],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO log_purges(grp, stream, max_id)
             VALUES(?1, ?2, (SELECT COALESCE(MAX(id), 0) FROM log_events))",
            params![group, name],
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn purge_log_events(&self, max_rows: usize) -> Result<usize> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let purges: Vec<(String, String, i64)> = {
            let mut stmt = tx.prepare_cached("SELECT grp, stream, max_id FROM log_purges")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut done = 0usize;
        for (grp, stream, max_id) in purges {
            let budget = max_rows - done;
            if budget == 0 {
                break;
            }
            let n = tx.execute(
                "DELETE FROM log_events WHERE id IN (SELECT id FROM log_events
                    WHERE grp=?1 AND stream=?2 AND id <= ?3 LIMIT ?4)",
                params![grp, stream, max_id, budget as i64],
            )?;
            done += n;
            if n < budget {
                tx.execute(
                    "DELETE FROM log_purges WHERE grp=?1 AND stream=?2 AND max_id=?3",
                    params![grp, stream, max_id],
                )?;
            }
        }
        tx.commit()?;
        Ok(done)
    }

    fn expire_log_events(&self, now_ms: i64, day_ms: i64, max_rows: usize) -> Result<usize> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let due: Vec<(String, String, i64)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT s.grp, s.name, ?1 - g.retention_days * ?2 FROM log_streams s
                 JOIN log_groups g ON g.name = s.grp
                 WHERE g.retention_days IS NOT NULL AND s.first_ts < ?1 - g.retention_days * ?2",
            )?;
            let rows = stmt.query_map(params![now_ms, day_ms], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut done = 0usize;
        for (grp, stream, cutoff) in due {
            let budget = max_rows - done;
            if budget == 0 {
                break;
            }
            let (n, bytes) = {
                let mut del = tx.prepare_cached(
                    "DELETE FROM log_events WHERE id IN (SELECT id FROM log_events
                        WHERE grp=?1 AND stream=?2 AND ts < ?3 ORDER BY ts, id LIMIT ?4)
                     RETURNING length(CAST(message AS BLOB))",
                )?;
                let lens = del.query_map(params![grp, stream, cutoff, budget as i64], |r| {
                    r.get::<_, i64>(0)
                })?;
                let mut n = 0usize;
                let mut bytes = 0i64;
                for l in lens {
                    n += 1;
                    bytes += l?;
                }
                (n, bytes)
            };
            done += n;
            tx.execute(
                "UPDATE log_streams SET stored_bytes = MAX(stored_bytes - ?3, 0),
                    first_ts = (SELECT MIN(ts) FROM log_events WHERE grp=?1 AND stream=?2)
                 WHERE grp=?1 AND name=?2",
                params![grp, stream, bytes],
            )?;
            tx.execute(
                "UPDATE log_groups SET stored_bytes = MAX(stored_bytes - ?2, 0) WHERE name=?1",
                params![grp, bytes],
            )?;
        }
        tx.commit()?;
        Ok(done)
    }

    fn log_group_tags(&self, name: &str) -> Result<Option<Vec<(String, String)>>> {
        let conn = self.lock();
        if !group_exists(&conn, name)? {
            return Ok(None);
        }
        let mut stmt =
            conn.prepare_cached("SELECT key, value FROM log_group_tags WHERE grp=?1 ORDER BY key")?;
        let rows = stmt.query_map(params![name], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(Some(rows.collect::<rusqlite::Result<_>>()?))
    }

    fn tag_log_group(
        &self,
        name: &str,
        tags: &[(String, String)],
        max: usize,
    ) -> Result<TagOutcome> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if !group_exists(&tx, name)? {
            return Ok(TagOutcome::NoSuchGroup);
        }
        for (k, v) in tags {
            tx.execute(
                "INSERT OR REPLACE INTO log_group_tags(grp, key, value) VALUES(?1, ?2, ?3)",
                params![name, k, v],
            )?;
        }
        let count: i64 = tx.query_row(
            "SELECT COUNT(*) FROM log_group_tags WHERE grp=?1",
            params![name],
            |r| r.get(0),
        )?;
        if count as usize > max {
            return Ok(TagOutcome::TooMany); // dropped without commit: rolled back
        }
        tx.commit()?;
        Ok(TagOutcome::Tagged)
    }

    fn untag_log_group(&self, name: &str, keys: &[String]) -> Result<bool> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if !group_exists(&tx, name)? {
            return Ok(false);
        }
        for k in keys {
            tx.execute(
                "DELETE FROM log_group_tags WHERE grp=?1 AND key=?2",
                params![name, k],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    fn create_log_stream(&self, group: &str, name: &str) -> Result<bool> {
        let conn = self.lock();
        let n = conn.execute(
            "INSERT OR IGNORE INTO log_streams(grp, name, created_at) VALUES(?1, ?2, ?3)",
            params![group, name, now_ms()],
        )?;
        Ok(n == 1)
    }

    fn log_groups(&self, prefix: &str) -> Result<Vec<LogGroup>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT name, created_at, stored_bytes, retention_days, class
             FROM log_groups WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map(params![prefix], group_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn log_group_exists(&self, name: &str) -> Result<bool> {
        Ok(group_exists(&self.lock(), name)?)
    }

    fn log_streams(&self, group: &str, prefix: &str) -> Result<Vec<LogStream>> {
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

    fn append_log_events(&self, group: &str, stream: &str, events: &[(i64, String)]) -> Result<()> {
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
        let bytes: i64 = events.iter().map(|e| e.1.len() as i64).sum();
        tx.execute(
            "UPDATE log_streams SET stored_bytes = stored_bytes + ?3 WHERE grp=?1 AND name=?2",
            params![group, stream, bytes],
        )?;
        tx.execute(
            "UPDATE log_groups SET stored_bytes = stored_bytes + ?2 WHERE name=?1",
            params![group, bytes],
        )?;
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

    fn log_events(&self, group: &str, q: &EventQuery) -> Result<Vec<LogEvent>> {
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

    fn all(s: &SqliteStore, group: &str) -> Vec<LogEvent> {
        s.log_events(
            group,
            &EventQuery {
                limit: 10_000,
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn retention_expires_old_events_in_bounded_batches() {
        let s = SqliteStore::open_in_memory().unwrap();
        let day = 86_400_000;
        let now = 100 * day;
        assert!(s.create_log_group("/g", "STANDARD", &[]).unwrap());
        // 25 events 3 days old in two streams, 2 fresh ones; "é" is two bytes.
        let old: Vec<(i64, String)> = (0..20).map(|i| (now - 3 * day + i, "é".into())).collect();
        s.append_log_events("/g", "a", &old).unwrap();
        let old_b: Vec<(i64, String)> = (0..5).map(|i| (now - 3 * day + i, "xy".into())).collect();
        s.append_log_events("/g", "b", &old_b).unwrap();
        s.append_log_events("/g", "a", &[(now - 1000, "new".into())])
            .unwrap();
        s.append_log_events("/g", "b", &[(now - 1000, "newer".into())])
            .unwrap();
        assert_eq!(
            s.log_group("/g").unwrap().unwrap().stored_bytes,
            40 + 10 + 3 + 5
        );
        // Without retention nothing goes.
        assert_eq!(s.expire_log_events(now, day, 10).unwrap(), 0);
        assert!(s.set_log_retention("/g", Some(1)).unwrap());
        assert!(!s.set_log_retention("/none", Some(1)).unwrap());
        // Batches never exceed the bound.
        let mut batches = vec![];
        loop {
            let n = s.expire_log_events(now, day, 10).unwrap();
            batches.push(n);
            if n < 10 {
                break;
            }
        }
        assert_eq!(batches, vec![10, 10, 5]);
        let left = all(&s, "/g");
        assert_eq!(left.len(), 2, "{left:?}");
        let g = s.log_group("/g").unwrap().unwrap();
        assert_eq!(g.stored_bytes, 8);
        assert_eq!(g.retention_days, Some(1));
        let st = s.log_streams("/g", "").unwrap();
        assert_eq!(st[0].first_ts, Some(now - 1000));
        // Longer retention keeps them; another group without retention is untouched.
        s.append_log_events("/h", "x", &[(now - 3 * day, "keep".into())])
            .unwrap();
        assert_eq!(s.expire_log_events(now, day, 10).unwrap(), 0);
        assert_eq!(all(&s, "/h").len(), 1);
    }

    #[test]
    fn delete_group_and_stream_purge_their_events_only() {
        let s = SqliteStore::open_in_memory().unwrap();
        s.append_log_events("/g", "a", &[(1, "aaaa".into()), (2, "b".into())])
            .unwrap();
        s.append_log_events("/g", "b", &[(3, "cc".into())]).unwrap();
        s.append_log_events("/other", "a", &[(3, "keep".into())])
            .unwrap();
        assert!(
            s.tag_log_group("/g", &[("k".into(), "v".into())], 50)
                .unwrap()
                == TagOutcome::Tagged
        );
        assert!(s.delete_log_stream("/g", "a").unwrap());
        assert!(!s.delete_log_stream("/g", "a").unwrap());
        assert_eq!(s.log_group("/g").unwrap().unwrap().stored_bytes, 2);
        // Purged in bounded batches.
        assert_eq!(s.purge_log_events(1).unwrap(), 1);
        assert_eq!(s.purge_log_events(10).unwrap(), 1);
        assert_eq!(s.purge_log_events(10).unwrap(), 0);
        assert_eq!(all(&s, "/g").len(), 1);
        assert!(s.delete_log_group("/g").unwrap());
        assert!(!s.delete_log_group("/g").unwrap());
        assert_eq!(s.log_group_tags("/g").unwrap(), None);
        // A group created again under the name starts empty, without the old tags, and the
        // pending purge does not touch its new events.
        assert!(s.create_log_group("/g", "STANDARD", &[]).unwrap());
        s.append_log_events("/g", "b", &[(9, "fresh".into())])
            .unwrap();
        while s.purge_log_events(10).unwrap() > 0 {}
        let ev = all(&s, "/g");
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].message, "fresh");
        assert_eq!(s.log_group_tags("/g").unwrap(), Some(vec![]));
        assert_eq!(all(&s, "/other").len(), 1);
    }

    #[test]
    fn tag_limit_is_atomic() {
        let s = SqliteStore::open_in_memory().unwrap();
        s.create_log_group("/t", "STANDARD", &[("a".into(), "1".into())])
            .unwrap();
        let two = [
            ("b".to_string(), "2".to_string()),
            ("c".to_string(), "3".to_string()),
        ];
        assert_eq!(s.tag_log_group("/t", &two, 2).unwrap(), TagOutcome::TooMany);
        assert_eq!(s.log_group_tags("/t").unwrap().unwrap().len(), 1);
        assert_eq!(
            s.tag_log_group("/t", &two[..1], 2).unwrap(),
            TagOutcome::Tagged
        );
        assert!(s.untag_log_group("/t", &["a".into()]).unwrap());
        assert_eq!(
            s.log_group_tags("/t").unwrap().unwrap(),
            vec![("b".to_string(), "2".to_string())]
        );
        assert_eq!(
            s.tag_log_group("/none", &two, 50).unwrap(),
            TagOutcome::NoSuchGroup
        );
    }
}
