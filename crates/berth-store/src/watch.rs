//! The watch machinery shared by the embedded implementations: a broadcast of committed batches
//! for live delivery, and the implementation's change history for replay (at the start, and again
//! when a slow watcher fell behind the broadcast).

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::{Change, Result, StoreError};

/// How many committed batches the live broadcast buffers per watcher before the watcher falls
/// back to replaying from the history.
pub(crate) const LIVE_BUFFER: usize = 256;

/// The changes of one commit, as broadcast to live watchers.
#[derive(Debug)]
pub(crate) struct Batch {
    pub revision: i64,
    pub changes: Vec<Change>,
}

/// The replay side of an implementation.
pub(crate) trait History: Send + Sync {
    /// The kept changes of `kind` under `prefix` with a revision above `after`, in order, and
    /// the revision the read saw as current; [`StoreError::Compacted`] when `after` is older than
    /// the kept history.
    fn since(&self, kind: &str, prefix: &str, after: i64) -> Result<(Vec<Change>, i64)>;
}

/// Fails with [`StoreError::Compacted`] when the history (which holds the changes after
/// `compacted`) cannot serve a watch from `after`.
pub(crate) fn check_kept(after: i64, compacted: i64) -> Result<()> {
    if after < compacted {
        Err(StoreError::Compacted {
            revision: after,
            compacted,
        })
    } else {
        Ok(())
    }
}

/// An ordered stream of [`Change`]s from [`crate::Store::watch`].
///
/// [`Watch::next`] is cancel-safe (it can sit in a `tokio::select!` with a timeout): a change is
/// either returned or kept for the next call.
pub struct Watch {
    kind: String,
    prefix: String,
    /// Changes read but not yet returned.
    pending: VecDeque<Change>,
    /// Every change up to this revision has been queued (or did not match).
    seen: i64,
    live: broadcast::Receiver<Arc<Batch>>,
    history: Arc<dyn History>,
}

impl Watch {
    /// Builds a watch whose live receiver was subscribed before `replayed` (the changes after the
    /// requested revision, read up to revision `head`) so that nothing falls between them.
    pub(crate) fn new(
        kind: &str,
        prefix: &str,
        from_revision: i64,
        replayed: Vec<Change>,
        head: i64,
        live: broadcast::Receiver<Arc<Batch>>,
        history: Arc<dyn History>,
    ) -> Self {
        Self {
            kind: kind.to_string(),
            prefix: prefix.to_string(),
            pending: replayed.into(),
            seen: head.max(from_revision),
            live,
            history,
        }
    }

    /// The next change, waiting for one when none is pending. Errors: [`StoreError::Compacted`]
    /// when this watcher fell so far behind that the history no longer holds what it missed
    /// (re-list and watch again), [`StoreError::WatchClosed`] when the store is gone.
    pub async fn next(&mut self) -> Result<Change> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Ok(c);
            }
            match self.live.recv().await {
                Ok(batch) => {
                    if batch.revision <= self.seen {
                        continue;
                    }
                    self.seen = batch.revision;
                    self.pending.extend(
                        batch
                            .changes
                            .iter()
                            .filter(|c| c.kind == self.kind && c.key.starts_with(&self.prefix))
                            .cloned(),
                    );
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let (changes, head) =
                        self.history.since(&self.kind, &self.prefix, self.seen)?;
                    self.pending.extend(changes);
                    self.seen = self.seen.max(head);
                }
                Err(broadcast::error::RecvError::Closed) => return Err(StoreError::WatchClosed),
            }
        }
    }
}
