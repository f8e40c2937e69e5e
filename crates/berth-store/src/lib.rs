//! berth-store: the control plane's state (DESIGN §2).
//!
//! [`Store`] is a small key-value interface over *kinds* (a namespace such as `ecs.cluster`) and
//! *keys*, where every record carries a revision that increases on each write. Writes can be
//! conditional on the revision a caller read (optimistic concurrency), and [`Store::commit`] applies
//! several writes atomically. [`SqliteStore`] is the embedded implementation (one SQLite file, WAL);
//! `SqliteStore::open_in_memory` serves tests. Log events (CloudWatch Logs) live beside it in
//! [`logs`], because they are append-only streams rather than records.

pub mod logs;
pub mod metrics;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{de::DeserializeOwned, Serialize};

/// Errors returned by a [`Store`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write found another revision than the one expected (or a record where none
    /// was expected).
    #[error("conflict on {kind}/{key}")]
    Conflict { kind: String, key: String },
    /// The backing database failed.
    #[error("store backend: {0}")]
    Backend(#[from] rusqlite::Error),
    /// A stored value could not be (de)serialised.
    #[error("store value: {0}")]
    Codec(#[from] serde_json::Error),
}

/// Result alias for store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// One stored record: its key, its revision (> 0) and its JSON value.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    pub revision: i64,
    pub value: Vec<u8>,
}

impl Record {
    /// Decodes the JSON value into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.value)?)
    }
}

/// The condition a write is applied under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Write whatever is there.
    Any,
    /// The key must not exist.
    Absent,
    /// The key must exist with exactly this revision.
    Revision(i64),
}

/// One write inside an atomic [`Store::commit`].
#[derive(Debug, Clone)]
pub enum Op {
    /// Insert or replace `kind/key` with a JSON value.
    Put {
        kind: String,
        key: String,
        value: Vec<u8>,
        expect: Expect,
    },
    /// Remove `kind/key` (no error when it is already gone unless `expect` says otherwise).
    Delete {
        kind: String,
        key: String,
        expect: Expect,
    },
}

impl Op {
    /// A put of `value` serialised as JSON.
    pub fn put<T: Serialize>(kind: &str, key: &str, value: &T, expect: Expect) -> Result<Op> {
        Ok(Op::Put {
            kind: kind.to_string(),
            key: key.to_string(),
            value: serde_json::to_vec(value)?,
            expect,
        })
    }
    /// A delete of `kind/key`.
    pub fn delete(kind: &str, key: &str, expect: Expect) -> Op {
        Op::Delete {
            kind: kind.to_string(),
            key: key.to_string(),
            expect,
        }
    }
}

/// The control plane's state store (DESIGN §2 `berth-store`).
pub trait Store: Send + Sync {
    /// Reads one record.
    fn get(&self, kind: &str, key: &str) -> Result<Option<Record>>;
    /// Lists the records of `kind` whose key starts with `prefix`, ordered by key.
    fn list(&self, kind: &str, prefix: &str) -> Result<Vec<Record>>;
    /// Applies all `ops` atomically, or none of them (a failed [`Expect`] gives
    /// [`StoreError::Conflict`]).
    fn commit(&self, ops: Vec<Op>) -> Result<()>;
    /// Allocates the next value of a named counter (1, 2, 3, ...), durably.
    fn next_sequence(&self, name: &str) -> Result<i64>;
}

/// Typed helpers over any [`Store`].
pub trait StoreExt: Store {
    /// Reads and decodes one record, with its revision.
    fn get_json<T: DeserializeOwned>(&self, kind: &str, key: &str) -> Result<Option<(T, i64)>> {
        match self.get(kind, key)? {
            Some(r) => Ok(Some((r.decode()?, r.revision))),
            None => Ok(None),
        }
    }
    /// Lists and decodes the records of `kind` under `prefix`.
    fn list_json<T: DeserializeOwned>(&self, kind: &str, prefix: &str) -> Result<Vec<T>> {
        self.list(kind, prefix)?
            .iter()
            .map(|r| r.decode())
            .collect()
    }
    /// Writes one JSON value under `expect`.
    fn put_json<T: Serialize>(
        &self,
        kind: &str,
        key: &str,
        value: &T,
        expect: Expect,
    ) -> Result<()> {
        self.commit(vec![Op::put(kind, key, value, expect)?])
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// The embedded SQLite store: table `records(kind, key, revision, value)` in WAL mode.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::init(Connection::open(path)?)
    }

    /// Opens a private in-memory database (tests).
    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self> {
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS records(
                kind TEXT NOT NULL, key TEXT NOT NULL, revision INTEGER NOT NULL, value BLOB NOT NULL,
                PRIMARY KEY(kind, key)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS sequences(name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )?;
        logs::init(&conn)?;
        metrics::init(&conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn current_revision(tx: &Connection, kind: &str, key: &str) -> Result<Option<i64>> {
    Ok(tx
        .query_row(
            "SELECT revision FROM records WHERE kind=?1 AND key=?2",
            params![kind, key],
            |r| r.get(0),
        )
        .optional()?)
}

fn check(expect: Expect, found: Option<i64>, kind: &str, key: &str) -> Result<()> {
    let ok = match expect {
        Expect::Any => true,
        Expect::Absent => found.is_none(),
        Expect::Revision(r) => found == Some(r),
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            kind: kind.to_string(),
            key: key.to_string(),
        })
    }
}

impl Store for SqliteStore {
    fn get(&self, kind: &str, key: &str) -> Result<Option<Record>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT key, revision, value FROM records WHERE kind=?1 AND key=?2")?;
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

    fn list(&self, kind: &str, prefix: &str) -> Result<Vec<Record>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
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

    fn commit(&self, ops: Vec<Op>) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for op in &ops {
            match op {
                Op::Put {
                    kind,
                    key,
                    value,
                    expect,
                } => {
                    let found = current_revision(&tx, kind, key)?;
                    check(*expect, found, kind, key)?;
                    tx.prepare_cached(
                        "INSERT INTO records(kind, key, revision, value) VALUES(?1, ?2, ?3, ?4)
                         ON CONFLICT(kind, key) DO UPDATE SET revision=excluded.revision, value=excluded.value",
                    )?
                    .execute(params![kind, key, found.unwrap_or(0) + 1, value])?;
                }
                Op::Delete { kind, key, expect } => {
                    let found = current_revision(&tx, kind, key)?;
                    check(*expect, found, kind, key)?;
                    tx.prepare_cached("DELETE FROM records WHERE kind=?1 AND key=?2")?
                        .execute(params![kind, key])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn next_sequence(&self, name: &str) -> Result<i64> {
        let conn = self.lock();
        Ok(conn.query_row(
            "INSERT INTO sequences(name, value) VALUES(?1, 1)
             ON CONFLICT(name) DO UPDATE SET value=value+1 RETURNING value",
            params![name],
            |r| r.get(0),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditional_writes_and_atomic_commits() {
        let s = SqliteStore::open_in_memory().unwrap();
        s.put_json("k", "a", &1, Expect::Absent).unwrap();
        assert!(matches!(
            s.put_json("k", "a", &2, Expect::Absent),
            Err(StoreError::Conflict { .. })
        ));
        let (v, rev): (i32, i64) = s.get_json("k", "a").unwrap().unwrap();
        assert_eq!((v, rev), (1, 1));
        s.put_json("k", "a", &3, Expect::Revision(1)).unwrap();
        // A failing op rolls back the whole commit.
        let err = s.commit(vec![
            Op::put("k", "b", &9, Expect::Any).unwrap(),
            Op::put("k", "a", &9, Expect::Revision(1)).unwrap(),
        ]);
        assert!(err.is_err());
        assert!(s.get("k", "b").unwrap().is_none());
        s.put_json("k", "ab", &4, Expect::Any).unwrap();
        let keys: Vec<String> = s
            .list("k", "a")
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, vec!["a", "ab"]);
        assert_eq!(s.next_sequence("x").unwrap(), 1);
        assert_eq!(s.next_sequence("x").unwrap(), 2);
    }
}
