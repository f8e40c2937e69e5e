//! [`MemoryStore`]: an in-memory [`Store`] with the same semantics as [`crate::SqliteStore`]
//! (tests, and a reference for the conformance suite).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use crate::watch::{check_kept, Batch, History, LIVE_BUFFER};
use crate::{check, Change, ChangeEvent, Op, Record, Result, Store, Watch, DEFAULT_HISTORY};

#[derive(Default)]
struct State {
    /// `(kind, key) -> (revision, value)`.
    records: BTreeMap<(String, String), (i64, Vec<u8>)>,
    /// The kept changes, oldest first.
    changes: VecDeque<Change>,
    revision: i64,
    compacted: i64,
    history: i64,
    sequences: HashMap<String, i64>,
}

impl State {
    fn drop_history(&mut self, upto: i64) {
        while self.changes.front().is_some_and(|c| c.revision <= upto) {
            self.changes.pop_front();
        }
        self.compacted = upto;
    }
}

impl History for Mutex<State> {
    fn since(&self, kind: &str, prefix: &str, after: i64) -> Result<(Vec<Change>, i64)> {
        let s = lock(self);
        check_kept(after, s.compacted)?;
        let changes = s
            .changes
            .iter()
            .filter(|c| c.revision > after && c.kind == kind && c.key.starts_with(prefix))
            .cloned()
            .collect();
        Ok((changes, s.revision))
    }
}

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// An in-memory store: nothing survives the value.
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    live: broadcast::Sender<Arc<Batch>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store keeping [`DEFAULT_HISTORY`] revisions of change history.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                history: DEFAULT_HISTORY,
                ..State::default()
            })),
            live: broadcast::channel(LIVE_BUFFER).0,
        }
    }

    /// Keeps the change history of the last `revisions` revisions.
    pub fn with_history(self, revisions: i64) -> Self {
        lock(&self.state).history = revisions.max(1);
        self
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn get(&self, kind: &str, key: &str) -> Result<Option<Record>> {
        let s = lock(&self.state);
        Ok(s.records
            .get(&(kind.to_string(), key.to_string()))
            .map(|(revision, value)| Record {
                key: key.to_string(),
                revision: *revision,
                value: value.clone(),
            }))
    }

    async fn list(&self, kind: &str, prefix: &str) -> Result<Vec<Record>> {
        let s = lock(&self.state);
        Ok(s.records
            .range((kind.to_string(), prefix.to_string())..)
            .take_while(|((k, key), _)| k == kind && key.starts_with(prefix))
            .map(|((_, key), (revision, value))| Record {
                key: key.clone(),
                revision: *revision,
                value: value.clone(),
            })
            .collect())
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<i64> {
        let mut s = lock(&self.state);
        let revision = s.revision + 1;
        // Plan against the records as changed by the earlier ops of this commit, then apply.
        let mut staged: HashMap<(String, String), Option<i64>> = HashMap::new();
        let mut changes = Vec::with_capacity(ops.len());
        for op in ops {
            let (kind, key, expect, event) = match op {
                Op::Put {
                    kind,
                    key,
                    value,
                    expect,
                } => (kind, key, expect, ChangeEvent::Put(value)),
                Op::Delete { kind, key, expect } => (kind, key, expect, ChangeEvent::Delete),
            };
            let id = (kind, key);
            let found = match staged.get(&id) {
                Some(r) => *r,
                None => s.records.get(&id).map(|(r, _)| *r),
            };
            check(expect, found, &id.0, &id.1)?;
            if event == ChangeEvent::Delete && found.is_none() {
                continue;
            }
            staged.insert(
                id.clone(),
                match event {
                    ChangeEvent::Put(_) => Some(revision),
                    ChangeEvent::Delete => None,
                },
            );
            changes.push(Change {
                revision,
                kind: id.0,
                key: id.1,
                event,
            });
        }
        if changes.is_empty() {
            return Ok(revision - 1);
        }
        for c in &changes {
            let id = (c.kind.clone(), c.key.clone());
            match &c.event {
                ChangeEvent::Put(v) => {
                    s.records.insert(id, (revision, v.clone()));
                }
                ChangeEvent::Delete => {
                    s.records.remove(&id);
                }
            }
            s.changes.push_back(c.clone());
        }
        s.revision = revision;
        let history = s.history;
        if revision - s.compacted > history + history / 8 {
            s.drop_history(revision - history);
        }
        let _ = self.live.send(Arc::new(Batch { revision, changes }));
        Ok(revision)
    }

    async fn next_sequence(&self, name: &str) -> Result<i64> {
        let mut s = lock(&self.state);
        let n = s.sequences.entry(name.to_string()).or_insert(0);
        *n += 1;
        Ok(*n)
    }

    async fn current_revision(&self) -> Result<i64> {
        Ok(lock(&self.state).revision)
    }

    async fn watch(&self, kind: &str, prefix: &str, from_revision: i64) -> Result<Watch> {
        let live = self.live.subscribe();
        let (replayed, head) = History::since(&*self.state, kind, prefix, from_revision)?;
        Ok(Watch::new(
            kind,
            prefix,
            from_revision,
            replayed,
            head,
            live,
            self.state.clone(),
        ))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        let mut s = lock(&self.state);
        let upto = revision.min(s.revision);
        if upto > s.compacted {
            s.drop_history(upto);
        }
        Ok(())
    }
}
