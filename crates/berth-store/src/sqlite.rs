//! [`SqliteStore`]: the embedded implementation of [`Store`] (and of [`crate::LogStore`] and
//! [`crate::MetricStore`], in `logs.rs` and `metrics.rs`).
//!
//! Tables: `records(kind, key, revision, value)`, `changes(revision, seq, kind, key, value)` (the
//! bounded change history, `value` NULL for a delete), `store_meta` (`revision`, `compacted`) and
//! `sequences`. SQLite calls are short and run on the calling task under one mutex; a commit
//! broadcasts its changes to live watchers before the mutex is released, so watchers see commits
//! in revision order.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::broadcast;

use crate::watch::{check_kept, Batch, History, LIVE_BUFFER};
use crate::{check, Change, ChangeEvent, Op, Record, Result, Store, Watch, DEFAULT_HISTORY};

/// The connection with the revisions it has committed (cached from `store_meta`).
pub(crate) struct Db {
    conn: Connection,
    revision: i64,
    compacted: i64,
    history: i64,
}

impl Deref for Db {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl DerefMut for Db {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

fn lock(db: &Mutex<Db>) -> MutexGuard<'_, Db> {
    db.lock().unwrap_or_else(|e| e.into_inner())
}

/// The embedded SQLite store (one file in WAL mode, or a private in-memory database).
pub struct SqliteStore {
    db: Arc<Mutex<Db>>,
    live: broadcast::Sender<Arc<Batch>>,
}

impl SqliteStore {
    /// Opens (creating or upgrading if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::init(Connection::open(path)?)
    }

    /// Opens a private in-memory database (tests).
    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    /// Keeps the change history of the last `revisions` revisions (default [`DEFAULT_HISTORY`]).
    pub fn with_history(self, revisions: i64) -> Self {
        lock(&self.db).history = revisions.max(1);
        self
    }

    fn init(conn: Connection) -> Result<Self> {
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS records(
                kind TEXT NOT NULL, key TEXT NOT NULL, revision INTEGER NOT NULL, value BLOB NOT NULL,
                PRIMARY KEY(kind, key)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS sequences(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS changes(revision INTEGER NOT NULL, seq INTEGER NOT NULL,
                kind TEXT NOT NULL, key TEXT NOT NULL, value BLOB,
                PRIMARY KEY(revision, seq)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS store_meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
             -- A database from before the global revision: start above every record's revision,
             -- with no history before it.
             INSERT OR IGNORE INTO store_meta(name, value)
                SELECT 'revision', COALESCE(MAX(revision), 0) FROM records;
             INSERT OR IGNORE INTO store_meta(name, value)
                SELECT 'compacted', value FROM store_meta WHERE name = 'revision';",
        )?;
        crate::logs::init(&conn)?;
        crate::metrics::init(&conn)?;
        let meta = |name: &str| -> Result<i64> {
            Ok(conn.query_row(
                "SELECT value FROM store_meta WHERE name=?1",
                params![name],
                |r| r.get(0),
            )?)
        };
        let (revision, compacted) = (meta("revision")?, meta("compacted")?);
        Ok(Self {
            db: Arc::new(Mutex::new(Db {
                conn,
                revision,
                compacted,
                history: DEFAULT_HISTORY,
            })),
            live: broadcast::channel(LIVE_BUFFER).0,
        })
    }

    /// The connection, for the log and metric tables.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Db> {
        lock(&self.db)
    }
}

fn record_revision(tx: &Connection, kind: &str, key: &str) -> Result<Option<i64>> {
    Ok(tx
        .query_row(
            "SELECT revision FROM records WHERE kind=?1 AND key=?2",
            params![kind, key],
            |r| r.get(0),
        )
        .optional()?)
}

/// Drops the history up to and including `upto` (inside the caller's transaction).
fn drop_history(tx: &Connection, upto: i64) -> Result<()> {
    tx.execute("DELETE FROM changes WHERE revision <= ?1", params![upto])?;
    tx.execute(
        "UPDATE store_meta SET value=?1 WHERE name='compacted'",
        params![upto],
    )?;
    Ok(())
}

impl History for Mutex<Db> {
    fn since(&self, kind: &str, prefix: &str, after: i64) -> Result<(Vec<Change>, i64)> {
        let db = lock(self);
        check_kept(after, db.compacted)?;
        let mut stmt = db.prepare_cached(
            "SELECT revision, key, value FROM changes WHERE revision > ?1 AND kind = ?2
             AND substr(key, 1, length(?3)) = ?3 ORDER BY revision, seq",
        )?;
        let rows = stmt.query_map(params![after, kind, prefix], |r| {
            let value: Option<Vec<u8>> = r.get(2)?;
            Ok(Change {
                revision: r.get(0)?,
                kind: kind.to_string(),
                key: r.get(1)?,
                event: value.map_or(ChangeEvent::Delete, ChangeEvent::Put),
            })
        })?;
        let changes = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((changes, db.revision))
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn get(&self, kind: &str, key: &str) -> Result<Option<Record>> {
        let db = self.lock();
        let mut stmt =
            db.prepare_cached("SELECT key, revision, value FROM records WHERE kind=?1 AND key=?2")?;
        Ok(stmt
            .query_row(params![kind, key], |r| {
                Ok(Record {
                    key: r.get(0)?,
                    revision: r.get(1)?,
                    value: r.get(2)?,
                })
            })
            .optional()?)
    }

    async fn list(&self, kind: &str, prefix: &str) -> Result<Vec<Record>> {
        let db = self.lock();
        let mut stmt = db.prepare_cached(
            "SELECT key, revision, value FROM records WHERE kind=?1 AND substr(key, 1, length(?2))=?2 ORDER BY key",
        )?;
        let rows = stmt.query_map(params![kind, prefix], |r| {
            Ok(Record {
                key: r.get(0)?,
                revision: r.get(1)?,
                value: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<i64> {
        let mut db = self.lock();
        let revision = db.revision + 1;
        let mut compacted = db.compacted;
        let history = db.history;
        let tx = db.conn.transaction()?;
        let mut changes = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Put {
                    kind,
                    key,
                    value,
                    expect,
                } => {
                    check(expect, record_revision(&tx, &kind, &key)?, &kind, &key)?;
                    tx.prepare_cached(
                        "INSERT INTO records(kind, key, revision, value) VALUES(?1, ?2, ?3, ?4)
                         ON CONFLICT(kind, key) DO UPDATE SET revision=excluded.revision, value=excluded.value",
                    )?
                    .execute(params![kind, key, revision, value])?;
                    changes.push(Change {
                        revision,
                        kind,
                        key,
                        event: ChangeEvent::Put(value),
                    });
                }
                Op::Delete { kind, key, expect } => {
                    let found = record_revision(&tx, &kind, &key)?;
                    check(expect, found, &kind, &key)?;
                    if found.is_some() {
                        tx.prepare_cached("DELETE FROM records WHERE kind=?1 AND key=?2")?
                            .execute(params![kind, key])?;
                        changes.push(Change {
                            revision,
                            kind,
                            key,
                            event: ChangeEvent::Delete,
                        });
                    }
                }
            }
        }
        if changes.is_empty() {
            return Ok(revision - 1);
        }
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO changes(revision, seq, kind, key, value) VALUES(?1, ?2, ?3, ?4, ?5)",
            )?;
            for (seq, c) in changes.iter().enumerate() {
                let value = match &c.event {
                    ChangeEvent::Put(v) => Some(v),
                    ChangeEvent::Delete => None,
                };
                stmt.execute(params![revision, seq as i64, c.kind, c.key, value])?;
            }
        }
        tx.prepare_cached("UPDATE store_meta SET value=?1 WHERE name='revision'")?
            .execute(params![revision])?;
        // Trim the history in steps of an eighth of its length, not on every commit.
        if revision - compacted > history + history / 8 {
            compacted = revision - history;
            drop_history(&tx, compacted)?;
        }
        tx.commit()?;
        db.revision = revision;
        db.compacted = compacted;
        // No receiver is not an error; sent under the lock so batches go out in revision order.
        let _ = self.live.send(Arc::new(Batch { revision, changes }));
        Ok(revision)
    }

    async fn next_sequence(&self, name: &str) -> Result<i64> {
        let db = self.lock();
        Ok(db.query_row(
            "INSERT INTO sequences(name, value) VALUES(?1, 1)
             ON CONFLICT(name) DO UPDATE SET value=value+1 RETURNING value",
            params![name],
            |r| r.get(0),
        )?)
    }

    async fn current_revision(&self) -> Result<i64> {
        Ok(self.lock().revision)
    }

    async fn watch(&self, kind: &str, prefix: &str, from_revision: i64) -> Result<Watch> {
        // Subscribe before reading the history, both under the commit lock: every commit after
        // the read reaches the receiver.
        let db = self.lock();
        let live = self.live.subscribe();
        drop(db);
        let (replayed, head) = History::since(&*self.db, kind, prefix, from_revision)?;
        Ok(Watch::new(
            kind,
            prefix,
            from_revision,
            replayed,
            head,
            live,
            self.db.clone(),
        ))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        let mut db = self.lock();
        let upto = revision.min(db.revision);
        if upto <= db.compacted {
            return Ok(());
        }
        let tx = db.conn.transaction()?;
        drop_history(&tx, upto)?;
        tx.commit()?;
        db.compacted = upto;
        Ok(())
    }
}
