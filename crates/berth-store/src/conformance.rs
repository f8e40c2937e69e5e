//! The one conformance suite every [`Store`] implementation passes (DESIGN §2).
//!
//! Each check is a public async function over a fresh, empty store; [`crate::store_conformance!`]
//! turns them into one `#[tokio::test]` per check for an implementation:
//!
//! ```ignore
//! berth_store::store_conformance!(|| std::sync::Arc::new(MyStore::new()));
//! ```
//!
//! Available to other crates with the `conformance` feature.

use std::sync::Arc;

use tokio::sync::Barrier;

use crate::{
    Change, ChangeEvent, Expect, Op, Store, StoreError, StoreExt, Update, UpdateError, Watch,
};

/// Generates one test per conformance check for the store made by `$make` (an expression
/// callable as `Fn() -> Arc<dyn Store>`-compatible, returning a fresh empty store each call).
#[macro_export]
macro_rules! store_conformance {
    ($make:expr) => {
        $crate::store_conformance!(@tests $make;
            conditional_writes, atomic_commit, revisions, list_by_prefix, watch_replay_then_live,
            watch_seam_under_load, watch_compacted, concurrent_writers, update_helper);
    };
    (@tests $make:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let store: ::std::sync::Arc<dyn $crate::Store> = ($make)();
                $crate::conformance::$check(store).await;
            }
        )*
    };
}

fn is_conflict<T: std::fmt::Debug>(r: crate::Result<T>) -> bool {
    matches!(r, Err(StoreError::Conflict { .. }))
}

async fn put(s: &dyn Store, kind: &str, key: &str, v: i64, expect: Expect) -> crate::Result<i64> {
    s.commit(vec![Op::put(kind, key, &v, expect)?]).await
}

async fn rev_of(s: &dyn Store, kind: &str, key: &str) -> Option<i64> {
    s.get(kind, key).await.unwrap().map(|r| r.revision)
}

async fn take(w: &mut Watch, n: usize) -> Vec<Change> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let c = tokio::time::timeout(std::time::Duration::from_secs(10), w.next())
            .await
            .expect("watch delivered nothing for 10 s")
            .unwrap();
        out.push(c);
    }
    out
}

fn summary(changes: &[Change]) -> Vec<(String, Option<i64>)> {
    changes
        .iter()
        .map(|c| {
            let v = match &c.event {
                ChangeEvent::Put(v) => Some(serde_json::from_slice(v).unwrap()),
                ChangeEvent::Delete => None,
            };
            (c.key.clone(), v)
        })
        .collect()
}

/// Create-if-absent, update-if-unchanged and delete-if-unchanged succeed and fail as expected.
pub async fn conditional_writes(s: Arc<dyn Store>) {
    let s = &*s;
    put(s, "k", "a", 1, Expect::Absent).await.unwrap();
    assert!(is_conflict(put(s, "k", "a", 2, Expect::Absent).await));
    let (v, r1): (i64, i64) = s.get_json("k", "a").await.unwrap().unwrap();
    assert_eq!(v, 1);
    assert!(is_conflict(
        put(s, "k", "a", 2, Expect::Revision(r1 + 1)).await
    ));
    assert!(is_conflict(
        put(s, "k", "nope", 2, Expect::Revision(r1)).await
    ));
    let r2 = put(s, "k", "a", 2, Expect::Revision(r1)).await.unwrap();
    assert!(r2 > r1);
    // A stale revision no longer matches, for puts and deletes.
    assert!(is_conflict(put(s, "k", "a", 3, Expect::Revision(r1)).await));
    assert!(is_conflict(
        s.commit(vec![Op::delete("k", "a", Expect::Revision(r1))])
            .await
    ));
    assert!(is_conflict(
        s.commit(vec![Op::delete("k", "a", Expect::Absent)]).await
    ));
    assert_eq!(s.get_json::<i64>("k", "a").await.unwrap(), Some((2, r2)));
    s.commit(vec![Op::delete("k", "a", Expect::Revision(r2))])
        .await
        .unwrap();
    assert!(s.get("k", "a").await.unwrap().is_none());
    // Deleting what is gone is fine unless a revision is required.
    s.commit(vec![Op::delete("k", "a", Expect::Any)])
        .await
        .unwrap();
    assert!(is_conflict(
        s.commit(vec![Op::delete("k", "a", Expect::Revision(r2))])
            .await
    ));
    put(s, "k", "a", 4, Expect::Absent).await.unwrap();
    put(s, "k", "a", 5, Expect::Any).await.unwrap();
    assert_eq!(s.get_json::<i64>("k", "a").await.unwrap().unwrap().0, 5);
}

/// A commit applies all its ops with one revision, or none of them.
pub async fn atomic_commit(s: Arc<dyn Store>) {
    let s = &*s;
    let r1 = put(s, "k", "a", 1, Expect::Absent).await.unwrap();
    let err = s
        .commit(vec![
            Op::put("k", "b", &9, Expect::Any).unwrap(),
            Op::delete("k", "a", Expect::Any),
            Op::put("k", "a", &9, Expect::Revision(r1 + 100)).unwrap(),
        ])
        .await;
    assert!(is_conflict(err));
    assert!(s.get("k", "b").await.unwrap().is_none());
    assert_eq!(s.get_json::<i64>("k", "a").await.unwrap(), Some((1, r1)));
    assert_eq!(s.current_revision().await.unwrap(), r1);
    // Ops see the earlier ops of the same commit.
    let r2 = s
        .commit(vec![
            Op::put("k", "b", &2, Expect::Absent).unwrap(),
            Op::put("j", "b", &3, Expect::Absent).unwrap(),
            Op::delete("k", "a", Expect::Revision(r1)),
            Op::put("k", "a", &4, Expect::Absent).unwrap(),
        ])
        .await
        .unwrap();
    assert_eq!(r2, r1 + 1);
    assert_eq!(s.get_json::<i64>("k", "b").await.unwrap(), Some((2, r2)));
    assert_eq!(s.get_json::<i64>("j", "b").await.unwrap(), Some((3, r2)));
    assert_eq!(s.get_json::<i64>("k", "a").await.unwrap(), Some((4, r2)));
}

/// The revision is global and strictly increasing; a record keeps the revision of its last change.
pub async fn revisions(s: Arc<dyn Store>) {
    let s = &*s;
    assert_eq!(s.current_revision().await.unwrap(), 0);
    let mut last = 0;
    for (i, key) in ["a", "b", "a", "c", "b"].iter().enumerate() {
        let kind = if i % 2 == 0 { "k" } else { "j" };
        let r = put(s, kind, key, i as i64, Expect::Any).await.unwrap();
        assert!(r > last, "revision {r} after {last}");
        assert_eq!(s.current_revision().await.unwrap(), r);
        assert_eq!(rev_of(s, kind, key).await, Some(r));
        last = r;
    }
    let ra = rev_of(s, "k", "a").await.unwrap();
    put(s, "k", "z", 0, Expect::Any).await.unwrap();
    assert_eq!(
        rev_of(s, "k", "a").await,
        Some(ra),
        "untouched keys keep their revision"
    );
    // A commit that changes nothing does not move the revision; sequences do not either.
    let now = s.current_revision().await.unwrap();
    let r = s
        .commit(vec![Op::delete("k", "missing", Expect::Any)])
        .await
        .unwrap();
    assert_eq!(r, now);
    assert_eq!(s.next_sequence("x").await.unwrap(), 1);
    assert_eq!(s.next_sequence("x").await.unwrap(), 2);
    assert_eq!(s.next_sequence("y").await.unwrap(), 1);
    assert_eq!(s.current_revision().await.unwrap(), now);
}

/// `list` returns one kind's records under a prefix, ordered bytewise by key.
pub async fn list_by_prefix(s: Arc<dyn Store>) {
    let s = &*s;
    for key in ["b", "a/2", "a/1", "a/10", "ab", "a/", "A"] {
        put(s, "k", key, 0, Expect::Absent).await.unwrap();
    }
    put(s, "j", "a/3", 0, Expect::Absent).await.unwrap();
    let keys = |rs: Vec<crate::Record>| rs.into_iter().map(|r| r.key).collect::<Vec<_>>();
    assert_eq!(
        keys(s.list("k", "a/").await.unwrap()),
        ["a/", "a/1", "a/10", "a/2"]
    );
    assert_eq!(
        keys(s.list("k", "").await.unwrap()),
        ["A", "a/", "a/1", "a/10", "a/2", "ab", "b"]
    );
    assert_eq!(keys(s.list("j", "").await.unwrap()), ["a/3"]);
    assert!(s.list("k", "c").await.unwrap().is_empty());
    assert!(s.list("none", "").await.unwrap().is_empty());
    let vals: Vec<i64> = s.list_json("k", "a/1").await.unwrap();
    assert_eq!(vals, [0, 0]);
}

/// A watch replays the changes after its revision, then delivers live ones, in order, filtered
/// by kind and key prefix.
pub async fn watch_replay_then_live(s: Arc<dyn Store>) {
    let r0 = s.current_revision().await.unwrap();
    let r1 = put(&*s, "k", "a/1", 1, Expect::Any).await.unwrap();
    put(&*s, "j", "a/1", 1, Expect::Any).await.unwrap();
    put(&*s, "k", "b/1", 1, Expect::Any).await.unwrap();
    let r2 = s
        .commit(vec![
            Op::put("k", "a/2", &2, Expect::Any).unwrap(),
            Op::delete("k", "a/1", Expect::Any),
        ])
        .await
        .unwrap();
    let mut all = s.watch("k", "a/", r0).await.unwrap();
    let mut later = s.watch("k", "a/", r1).await.unwrap();
    let mut live = s.watch("k", "a/", r2).await.unwrap();
    let replayed = take(&mut all, 3).await;
    assert_eq!(
        summary(&replayed),
        [
            ("a/1".into(), Some(1)),
            ("a/2".into(), Some(2)),
            ("a/1".into(), None)
        ]
    );
    assert_eq!(
        replayed.iter().map(|c| c.revision).collect::<Vec<_>>(),
        [r1, r2, r2]
    );
    assert!(replayed.iter().all(|c| c.kind == "k"));
    assert_eq!(
        summary(&take(&mut later, 2).await),
        [("a/2".into(), Some(2)), ("a/1".into(), None)]
    );
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            put(&*s, "k", "b/2", 0, Expect::Any).await.unwrap();
            put(&*s, "k", "a/3", 3, Expect::Any).await.unwrap();
            put(&*s, "k", "a/2", 4, Expect::Any).await.unwrap()
        })
    };
    let r3 = writer.await.unwrap();
    for w in [&mut all, &mut later, &mut live] {
        let got = take(w, 2).await;
        assert_eq!(
            summary(&got),
            [("a/3".into(), Some(3)), ("a/2".into(), Some(4))]
        );
        assert_eq!(got[1].revision, r3);
        assert!(got[0].revision < got[1].revision);
    }
    for w in [&mut all, &mut later, &mut live] {
        assert_quiet(w).await;
    }
}

/// Fails when the watch has another change to deliver (within 100 ms).
async fn assert_quiet(w: &mut Watch) {
    let extra = tokio::time::timeout(std::time::Duration::from_millis(100), w.next()).await;
    assert!(extra.is_err(), "unexpected change {extra:?}");
}

/// Watches started while another task commits, and watchers that fall far behind the live
/// feed, still see every change exactly once and in order.
pub async fn watch_seam_under_load(s: Arc<dyn Store>) {
    const N: i64 = 600;
    let r0 = s.current_revision().await.unwrap();
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 1..=N {
                put(&*s, "k", &format!("n/{}", i % 7), i, Expect::Any)
                    .await
                    .unwrap();
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut watches = Vec::new();
    for _ in 0..4 {
        watches.push(s.watch("k", "n/", r0).await.unwrap());
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    // Every watcher is now far behind the live buffer; it still gets everything.
    for mut w in watches {
        let got = take(&mut w, N as usize).await;
        let revs: Vec<i64> = got.iter().map(|c| c.revision).collect();
        assert_eq!(revs, ((r0 + 1)..=(r0 + N)).collect::<Vec<_>>());
        let vals: Vec<i64> = summary(&got).into_iter().map(|(_, v)| v.unwrap()).collect();
        assert_eq!(vals, (1..=N).collect::<Vec<_>>());
        assert_quiet(&mut w).await;
    }
}

/// A watch from a compacted revision fails with `Compacted`; from a kept one it works.
pub async fn watch_compacted(s: Arc<dyn Store>) {
    let r1 = put(&*s, "k", "a", 1, Expect::Any).await.unwrap();
    let r2 = put(&*s, "k", "a", 2, Expect::Any).await.unwrap();
    let r3 = put(&*s, "k", "a", 3, Expect::Any).await.unwrap();
    s.compact(r2).await.unwrap();
    for from in [0, r1] {
        match s.watch("k", "", from).await {
            Err(StoreError::Compacted { revision, .. }) => assert_eq!(revision, from),
            other => panic!("watch from {from}: {:?}", other.map(|_| ())),
        }
    }
    let mut w = s.watch("k", "", r2).await.unwrap();
    let got = take(&mut w, 1).await;
    assert_eq!((got[0].revision, summary(&got)[0].1), (r3, Some(3)));
    // Compacting is idempotent and clamped to the current revision.
    s.compact(r1).await.unwrap();
    s.compact(r3 + 10).await.unwrap();
    assert!(matches!(
        s.watch("k", "", r2).await,
        Err(StoreError::Compacted { .. })
    ));
    let mut w = s.watch("k", "", r3).await.unwrap();
    let r4 = put(&*s, "k", "a", 4, Expect::Any).await.unwrap();
    assert_eq!(take(&mut w, 1).await[0].revision, r4);
}

/// Two writers racing on one key with the same expectation: exactly one wins.
pub async fn concurrent_writers(s: Arc<dyn Store>) {
    for round in 0..20 {
        let key = format!("race/{round}");
        let expect = if round % 2 == 0 {
            Expect::Absent
        } else {
            let r = put(&*s, "k", &key, 0, Expect::Absent).await.unwrap();
            Expect::Revision(r)
        };
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = (1..=2)
            .map(|v| {
                let (s, key, barrier) = (s.clone(), key.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    put(&*s, "k", &key, v, expect).await
                })
            })
            .collect();
        let mut won = Vec::new();
        let mut conflicts = 0;
        for (v, r) in (1..=2).zip(racers) {
            match r.await.unwrap() {
                Ok(_) => won.push(v),
                Err(StoreError::Conflict { .. }) => conflicts += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!((won.len(), conflicts), (1, 1), "round {round}");
        assert_eq!(
            s.get_json::<i64>("k", &key).await.unwrap().unwrap().0,
            won[0]
        );
    }
}

/// `update` re-plans on conflicts so concurrent increments all land, and applies each decision.
pub async fn update_helper(s: Arc<dyn Store>) {
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut done = 0;
                while done < 50 {
                    let r = s
                        .update("k", "n", |v: Option<i64>| {
                            Ok::<_, ()>(Update::Put(v.unwrap_or(0) + 1))
                        })
                        .await;
                    match r {
                        Ok(_) => done += 1,
                        // Out of attempts under heavy contention: nothing was written.
                        Err(UpdateError::Store(StoreError::Conflict { .. })) => {
                            tokio::task::yield_now().await
                        }
                        Err(e) => panic!("{e:?}"),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(s.get_json::<i64>("k", "n").await.unwrap().unwrap().0, 100);
    let r = s.current_revision().await.unwrap();
    let same = s
        .update("k", "n", |_: Option<i64>| Ok::<_, ()>(Update::Unchanged))
        .await
        .unwrap();
    assert_eq!((same, s.current_revision().await.unwrap()), (Some(100), r));
    let err: Result<Option<i64>, UpdateError<&str>> = s.update("k", "n", |_| Err("refused")).await;
    assert!(matches!(err, Err(UpdateError::Rejected("refused"))));
    assert_eq!(s.current_revision().await.unwrap(), r);
    let gone = s
        .update("k", "n", |_: Option<i64>| Ok::<_, ()>(Update::Delete))
        .await
        .unwrap();
    assert_eq!(gone, None);
    assert!(s.get("k", "n").await.unwrap().is_none());
    let created = s
        .update("k", "n", |v: Option<i64>| {
            assert_eq!(v, None);
            Ok::<_, ()>(Update::Put(7))
        })
        .await
        .unwrap();
    assert_eq!(created, Some(7));
}
