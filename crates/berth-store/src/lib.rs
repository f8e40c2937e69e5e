//! berth-store: the control plane's state (DESIGN §2).
//!
//! [`Store`] is a small asynchronous key-value interface over *kinds* (a namespace such as
//! `ecs.cluster`) and *keys*, shaped like etcd's: every commit gets the next value of one global,
//! strictly increasing *revision*, and each [`Record`] carries the revision of its last change
//! (etcd's `mod_revision`). Writes can be conditional on the revision a caller read (optimistic
//! concurrency), [`Store::commit`] applies several writes atomically, and [`Store::watch`] delivers
//! the ordered [`Change`]s of a kind from a revision on (a bounded history is replayed first, then
//! live changes follow). It is used as `Arc<dyn Store>`.
//!
//! Implementations: [`SqliteStore`] (embedded, one SQLite file in WAL mode; also in memory) and
//! [`MemoryStore`] (tests); both pass the one conformance suite in [`conformance`]. Log events and
//! metric samples are append-only streams, not records, and never live in etcd: they sit behind
//! their own [`LogStore`] and [`MetricStore`] traits, which [`SqliteStore`] implements too.

pub mod logs;
mod memory;
pub mod metrics;
mod sqlite;
mod watch;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

use std::future::Future;

use serde::{de::DeserializeOwned, Serialize};

pub use logs::LogStore;
pub use memory::MemoryStore;
pub use metrics::MetricStore;
pub use sqlite::SqliteStore;
pub use watch::Watch;

/// Errors returned by a [`Store`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write found another revision than the one expected (or a record where none
    /// was expected). Callers re-read and re-plan (see [`StoreExt::update`]).
    #[error("conflict on {kind}/{key}")]
    Conflict { kind: String, key: String },
    /// A watch asked for changes after `revision`, but the history only goes back to changes
    /// after `compacted` (etcd's `ErrCompacted`). The watcher re-lists and watches from the
    /// current revision.
    #[error("revision {revision} is compacted (history starts after {compacted})")]
    Compacted { revision: i64, compacted: i64 },
    /// The store behind a watch is gone.
    #[error("watch closed")]
    WatchClosed,
    /// The backing database failed.
    #[error("store backend: {0}")]
    Backend(#[from] rusqlite::Error),
    /// A stored value could not be (de)serialised.
    #[error("store value: {0}")]
    Codec(#[from] serde_json::Error),
}

/// Result alias for store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// One stored record: its key, the revision of its last change (> 0) and its JSON value.
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
    /// The key must exist with exactly this revision (the [`Record::revision`] read).
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
    pub fn put<T: Serialize + ?Sized>(
        kind: &str,
        key: &str,
        value: &T,
        expect: Expect,
    ) -> Result<Op> {
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

/// What happened to a key in a [`Change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeEvent {
    /// The key now holds this JSON value.
    Put(Vec<u8>),
    /// The key was removed.
    Delete,
}

/// One change delivered by a [`Watch`]: the revision of the commit that made it, and the key.
/// Changes arrive in revision order; one commit's changes share its revision and arrive in the
/// order of its ops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub revision: i64,
    pub kind: String,
    pub key: String,
    pub event: ChangeEvent,
}

/// The control plane's state store (DESIGN §2 `berth-store`), object safe: use `Arc<dyn Store>`.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Reads one record.
    async fn get(&self, kind: &str, key: &str) -> Result<Option<Record>>;
    /// Lists the records of `kind` whose key starts with `prefix`, ordered by key (bytewise).
    async fn list(&self, kind: &str, prefix: &str) -> Result<Vec<Record>>;
    /// Applies all `ops` in order and atomically, or none of them (a failed [`Expect`] gives
    /// [`StoreError::Conflict`]). Every op that changes something gets the same new revision,
    /// which is returned; a commit that changes nothing (only deletes of absent keys) keeps the
    /// current revision and returns it.
    async fn commit(&self, ops: Vec<Op>) -> Result<i64>;
    /// Allocates the next value of a named counter (1, 2, 3, ...), durably. Counters are not
    /// records: they have no revision and are not watched.
    async fn next_sequence(&self, name: &str) -> Result<i64>;
    /// The revision of the last commit (0 for an empty store).
    async fn current_revision(&self) -> Result<i64>;
    /// Watches the records of `kind` whose key starts with `prefix`: the returned [`Watch`]
    /// first yields the kept changes with a revision above `from_revision`, then live changes, in
    /// revision order with none lost or repeated. Watching from [`Store::current_revision`]
    /// yields only what changes afterwards. Fails with [`StoreError::Compacted`] when changes
    /// after `from_revision` are no longer kept.
    async fn watch(&self, kind: &str, prefix: &str, from_revision: i64) -> Result<Watch>;
    /// Forgets the change history up to and including `revision` (clamped to the current
    /// revision; an older revision than already compacted is a no-op). Implementations also
    /// compact on their own to keep the history bounded.
    async fn compact(&self, revision: i64) -> Result<()>;
}

/// How many times [`StoreExt::update`] tries before returning the conflict.
pub const UPDATE_ATTEMPTS: usize = 16;

/// What an [`StoreExt::update`] closure decided to do with the record it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update<T> {
    /// Store this value (create it when the record was absent).
    Put(T),
    /// Remove the record (nothing to do when it was absent).
    Delete,
    /// Leave the record as it is.
    Unchanged,
}

/// Why a [`StoreExt::update`] failed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E> {
    /// The store failed, or the record kept changing for [`UPDATE_ATTEMPTS`] tries
    /// ([`StoreError::Conflict`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The closure refused the update with its own error; nothing was written.
    #[error("update rejected")]
    Rejected(E),
}

/// Typed helpers over any [`Store`] (also `dyn Store`).
pub trait StoreExt: Store {
    /// Reads and decodes one record, with its revision.
    fn get_json<T: DeserializeOwned>(
        &self,
        kind: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<(T, i64)>>> + Send {
        async move {
            match self.get(kind, key).await? {
                Some(r) => Ok(Some((r.decode()?, r.revision))),
                None => Ok(None),
            }
        }
    }

    /// Lists and decodes the records of `kind` under `prefix`, ordered by key.
    fn list_json<T: DeserializeOwned>(
        &self,
        kind: &str,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<T>>> + Send {
        async move {
            self.list(kind, prefix)
                .await?
                .iter()
                .map(|r| r.decode())
                .collect()
        }
    }

    /// Writes one JSON value under `expect`.
    fn put_json<T: Serialize + ?Sized>(
        &self,
        kind: &str,
        key: &str,
        value: &T,
        expect: Expect,
    ) -> impl Future<Output = Result<()>> + Send {
        let op = Op::put(kind, key, value, expect);
        async move {
            self.commit(vec![op?]).await?;
            Ok(())
        }
    }

    /// Read-modify-write of one record with optimistic concurrency: reads `kind/key`, calls `f`
    /// with its decoded value (`None` when absent), and commits what `f` decided on the condition
    /// that the record did not change meanwhile. On a conflict it starts over, up to
    /// [`UPDATE_ATTEMPTS`] times, then returns the [`StoreError::Conflict`]. An error from `f`
    /// stops at once ([`UpdateError::Rejected`]). Returns the record's value afterwards (`None`
    /// when deleted or absent).
    fn update<T, E, F>(
        &self,
        kind: &str,
        key: &str,
        mut f: F,
    ) -> impl Future<Output = std::result::Result<Option<T>, UpdateError<E>>> + Send
    where
        T: Serialize + DeserializeOwned + Send,
        E: Send,
        F: FnMut(Option<T>) -> std::result::Result<Update<T>, E> + Send,
    {
        async move {
            let mut last = None;
            for _ in 0..UPDATE_ATTEMPTS {
                let found = self.get(kind, key).await?;
                let (current, expect) = match &found {
                    Some(r) => (Some(r.decode::<T>()?), Expect::Revision(r.revision)),
                    None => (None, Expect::Absent),
                };
                let (op, after) = match f(current).map_err(UpdateError::Rejected)? {
                    Update::Put(v) => (Op::put(kind, key, &v, expect)?, Some(v)),
                    Update::Delete if found.is_some() => (Op::delete(kind, key, expect), None),
                    Update::Delete => return Ok(None),
                    Update::Unchanged => {
                        return Ok(match found {
                            Some(r) => Some(r.decode()?),
                            None => None,
                        })
                    }
                };
                match self.commit(vec![op]).await {
                    Ok(_) => return Ok(after),
                    Err(e @ StoreError::Conflict { .. }) => last = Some(e),
                    Err(e) => return Err(e.into()),
                }
            }
            Err(UpdateError::Store(last.unwrap_or_else(|| {
                StoreError::Conflict {
                    kind: kind.to_string(),
                    key: key.to_string(),
                }
            })))
        }
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// Checks one op's [`Expect`] against the revision found for its key (shared by the
/// implementations so they agree).
pub(crate) fn check(expect: Expect, found: Option<i64>, kind: &str, key: &str) -> Result<()> {
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

/// How many revisions of change history the implementations keep by default for watches that
/// start in the past (older revisions are compacted).
pub const DEFAULT_HISTORY: i64 = 4096;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A fresh database file under the system temporary directory (removed with the process's
    /// other leftovers by the OS; each call gets its own name).
    fn temp_db() -> std::path::PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "berth-store-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("state.db")
    }

    mod sqlite_file {
        crate::store_conformance!(|| std::sync::Arc::new(
            crate::SqliteStore::open(&super::temp_db()).unwrap()
        ));
    }

    mod sqlite_memory {
        crate::store_conformance!(|| std::sync::Arc::new(
            crate::SqliteStore::open_in_memory().unwrap()
        ));
    }

    mod memory {
        crate::store_conformance!(|| std::sync::Arc::new(crate::MemoryStore::new()));
    }

    /// A store whose commits always conflict, to see `update` give up.
    struct AlwaysConflict(MemoryStore);

    #[async_trait::async_trait]
    impl Store for AlwaysConflict {
        async fn get(&self, kind: &str, key: &str) -> Result<Option<Record>> {
            self.0.get(kind, key).await
        }
        async fn list(&self, kind: &str, prefix: &str) -> Result<Vec<Record>> {
            self.0.list(kind, prefix).await
        }
        async fn commit(&self, _ops: Vec<Op>) -> Result<i64> {
            Err(StoreError::Conflict {
                kind: "k".into(),
                key: "a".into(),
            })
        }
        async fn next_sequence(&self, name: &str) -> Result<i64> {
            self.0.next_sequence(name).await
        }
        async fn current_revision(&self) -> Result<i64> {
            self.0.current_revision().await
        }
        async fn watch(&self, kind: &str, prefix: &str, from: i64) -> Result<Watch> {
            self.0.watch(kind, prefix, from).await
        }
        async fn compact(&self, revision: i64) -> Result<()> {
            self.0.compact(revision).await
        }
    }

    #[tokio::test]
    async fn update_gives_up_after_bounded_attempts() {
        let s: Arc<dyn Store> = Arc::new(AlwaysConflict(MemoryStore::new()));
        let mut calls = 0;
        let r: std::result::Result<Option<i64>, UpdateError<()>> = s
            .update("k", "a", |_| {
                calls += 1;
                Ok(Update::Put(1))
            })
            .await;
        assert!(matches!(
            r,
            Err(UpdateError::Store(StoreError::Conflict { .. }))
        ));
        assert_eq!(calls, UPDATE_ATTEMPTS);
    }

    async fn history_stays_bounded(s: Arc<dyn Store>) {
        for i in 0..100 {
            s.put_json("k", "a", &i, Expect::Any).await.unwrap();
        }
        // At least the last 10 revisions are kept, and at most 10 + 10/8.
        assert!(matches!(
            s.watch("k", "", 88).await,
            Err(StoreError::Compacted { .. })
        ));
        let mut w = s.watch("k", "", 90).await.unwrap();
        assert_eq!(w.next().await.unwrap().revision, 91);
    }

    #[tokio::test]
    async fn sqlite_history_stays_bounded() {
        let s = SqliteStore::open_in_memory().unwrap().with_history(10);
        history_stays_bounded(Arc::new(s)).await;
    }

    #[tokio::test]
    async fn memory_history_stays_bounded() {
        history_stays_bounded(Arc::new(MemoryStore::new().with_history(10))).await;
    }

    #[tokio::test]
    async fn sqlite_revision_survives_reopen_and_upgrades_old_databases() {
        let path = temp_db();
        {
            // A database written before the global revision: per-key revisions only.
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE records(kind TEXT NOT NULL, key TEXT NOT NULL,
                    revision INTEGER NOT NULL, value BLOB NOT NULL, PRIMARY KEY(kind, key)) WITHOUT ROWID;
                 INSERT INTO records VALUES('k', 'a', 7, '1'), ('k', 'b', 2, '2');",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.current_revision().await.unwrap(), 7);
        assert!(matches!(
            s.watch("k", "", 6).await,
            Err(StoreError::Compacted { .. })
        ));
        s.put_json("k", "b", &3, Expect::Revision(2)).await.unwrap();
        assert_eq!(s.get("k", "b").await.unwrap().unwrap().revision, 8);
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.current_revision().await.unwrap(), 8);
        let mut w = s.watch("k", "", 7).await.unwrap();
        let c = w.next().await.unwrap();
        assert_eq!((c.revision, c.key.as_str()), (8, "b"));
        assert_eq!(c.event, ChangeEvent::Put(b"3".to_vec()));
    }
}
