//! Task ephemeral storage (ECS `ephemeralStorage.sizeInGiB`, 20 GiB by default): **measured,
//! not a quota**. The containers' writable layers (`<task-dir>/c<idx>/upper`, the overlay
//! upper directories) and the task's scratch volumes (`<task-dir>/volumes/*`) live on the
//! agent's data-dir filesystem, and the agent has no filesystem quota to put on them. So at
//! every metrics interval the sampler walks those trees (allocated blocks, hard links counted
//! once, symlinks never followed, the walk stops as soon as the limit is passed), reports the
//! use in the task metadata endpoint (`EphemeralStorageMetrics.Utilized`, MiB) and, like the
//! kubelet's eviction of a pod over its ephemeral-storage limit, stops a task over its limit:
//! its containers are killed (SIGTERM then SIGKILL at once) and the task stops with
//! `stopCode` `EssentialContainerExited` and a `stoppedReason` starting
//! `EphemeralStorageExceeded:`. Between two measurements a task can write past its limit.
//! Host-path volumes are the host's business and not counted.
//!
//! Test knob (tests only, never for production): `BERTH_TEST_EPHEMERAL_BYTES_PER_GIB` in the
//! agent's environment makes each GiB of a task's limit count as that many bytes, so a test
//! can pass a 21 GiB limit by writing a few MiB.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use tokio::sync::watch;

/// ECS's default task ephemeral storage, GiB.
pub const DEFAULT_GIB: u32 = 20;

/// Directory levels a measurement descends (one open fd per level); a deeper tree cannot be
/// measured and counts as over the limit.
pub const MAX_DEPTH: usize = 512;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Bytes per GiB of limit: 2^30, or `BERTH_TEST_EPHEMERAL_BYTES_PER_GIB` (tests only).
pub fn bytes_per_gib() -> u64 {
    static V: OnceLock<u64> = OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("BERTH_TEST_EPHEMERAL_BYTES_PER_GIB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v > 0)
            .inspect(|v| {
                tracing::warn!("test knob: ephemeral storage limits are {v} bytes per GiB")
            })
            .unwrap_or(GIB)
    })
}

/// The enforced limit in bytes of a task with `ephemeralStorage.sizeInGiB` = `gib`
/// ([`DEFAULT_GIB`] when unset).
pub fn limit_bytes(gib: Option<u32>) -> u64 {
    gib.unwrap_or(DEFAULT_GIB) as u64 * bytes_per_gib()
}

/// Whole MiB (rounded up) of `bytes`.
pub fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB)
}

/// One measurement of a task's writable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Allocated bytes seen (at least `limit + 1` when the walk stopped early).
    pub bytes: u64,
    /// The walk stopped early: over the limit, or a tree too deep to measure.
    pub over: bool,
}

const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::RDONLY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

struct Walk {
    seen: HashSet<(u64, u64)>,
    bytes: u64,
    limit: u64,
    over: bool,
}

impl Walk {
    /// Adds everything below the open directory `dir`; false once the walk must stop.
    fn dir(&mut self, dir: &OwnedFd, depth: usize) -> bool {
        if depth > MAX_DEPTH {
            self.over = true;
            return false;
        }
        let mut names = Vec::new();
        let Ok(mut d) = rustix::fs::Dir::read_from(dir) else {
            return true;
        };
        while let Some(Ok(e)) = d.read() {
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsString::from_vec(n.to_vec()));
            }
        }
        drop(d);
        for n in names {
            // Entries vanish under a running container: skip what is gone.
            let Ok(st) = rustix::fs::statat(dir, &n, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let first = st.st_nlink <= 1 || self.seen.insert((st.st_dev, st.st_ino));
            if first {
                self.bytes += st.st_blocks as u64 * 512;
            }
            if self.bytes > self.limit {
                self.over = true;
                return false;
            }
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                if let Ok(sub) = rustix::fs::openat(dir, &n, DIR_FLAGS, Mode::empty()) {
                    if !self.dir(&sub, depth + 1) {
                        return false;
                    }
                }
            }
        }
        true
    }
}

/// Measures the writable storage of the task whose directory is `task_dir`: every
/// `c<idx>/upper` and everything in `volumes/`, stopping once past `limit` bytes.
pub fn measure(task_dir: &Path, limit: u64) -> Usage {
    let mut w = Walk {
        seen: HashSet::new(),
        bytes: 0,
        limit,
        over: false,
    };
    let Ok(root) = rustix::fs::open(task_dir, DIR_FLAGS, Mode::empty()) else {
        return Usage {
            bytes: 0,
            over: false,
        };
    };
    let mut trees: Vec<OwnedFd> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(task_dir) {
        for e in rd.flatten() {
            let name = e.file_name();
            let n = name.to_string_lossy();
            let is_container =
                n.len() > 1 && n.starts_with('c') && n[1..].bytes().all(|b| b.is_ascii_digit());
            let sub = if is_container {
                rustix::fs::openat(&root, &name, DIR_FLAGS, Mode::empty())
                    .and_then(|c| rustix::fs::openat(&c, "upper", DIR_FLAGS, Mode::empty()))
            } else if n == "volumes" {
                rustix::fs::openat(&root, &name, DIR_FLAGS, Mode::empty())
            } else {
                continue;
            };
            if let Ok(fd) = sub {
                trees.push(fd);
            }
        }
    }
    for t in &trees {
        if !w.dir(t, 1) {
            break;
        }
    }
    Usage {
        bytes: w.bytes,
        over: w.over,
    }
}

/// The `stoppedReason` of a task stopped for its ephemeral storage.
pub fn reason(usage: Usage, limit: u64, gib: Option<u32>) -> String {
    let gib = gib.unwrap_or(DEFAULT_GIB);
    if usage.bytes <= limit {
        return format!(
            "EphemeralStorageExceeded: the task's writable storage (container layers and task volumes) has directories nested deeper than {MAX_DEPTH} levels, which cannot be measured against its ephemeralStorage of {gib} GiB"
        );
    }
    format!(
        "EphemeralStorageExceeded: the task's writable storage (container layers and task volumes) used more than its ephemeralStorage limit of {gib} GiB ({} MiB)",
        limit / MIB
    )
}

/// Requests from the sampler to stop tasks, with the reason, that each task's supervisor
/// watches.
#[derive(Default)]
pub struct Evictions {
    tasks: Mutex<HashMap<String, watch::Sender<Option<String>>>>,
}

impl Evictions {
    /// The receiver a supervisor watches for task `id` (until [`Evictions::forget`]).
    pub fn subscribe(&self, id: &str) -> watch::Receiver<Option<String>> {
        let mut m = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(id.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    /// Asks task `id`'s supervisor to stop it with `reason` (once).
    pub fn evict(&self, id: &str, reason: String) {
        let m = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = m.get(id) {
            tx.send_if_modified(|r| {
                if r.is_none() {
                    *r = Some(reason);
                    true
                } else {
                    false
                }
            });
        }
    }

    pub fn forget(&self, id: &str) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("berth-eph-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn measures_uppers_and_volumes_once_and_never_follows_symlinks() {
        let t = dir("measure");
        let outside = dir("measure-outside");
        std::fs::write(outside.join("big"), vec![1u8; 4 << 20]).unwrap();
        std::fs::create_dir_all(t.join("c0/upper/deep/er")).unwrap();
        std::fs::create_dir_all(t.join("c1/upper")).unwrap();
        std::fs::create_dir_all(t.join("volumes/scratch")).unwrap();
        std::fs::create_dir_all(t.join("c0/rootfs")).unwrap();
        std::fs::write(t.join("c0/upper/deep/er/a"), vec![1u8; 1 << 20]).unwrap();
        std::fs::hard_link(t.join("c0/upper/deep/er/a"), t.join("c0/upper/a-again")).unwrap();
        std::fs::write(t.join("c1/upper/b"), vec![1u8; 1 << 20]).unwrap();
        std::fs::write(t.join("volumes/scratch/c"), vec![1u8; 1 << 20]).unwrap();
        // Not counted: the rootfs mount point, a symlink to a big host dir.
        std::fs::write(t.join("c0/rootfs/x"), vec![1u8; 4 << 20]).unwrap();
        std::os::unix::fs::symlink(&outside, t.join("c1/upper/host")).unwrap();
        let u = measure(&t, u64::MAX);
        assert!(!u.over);
        let mib3 = 3 << 20;
        assert!(
            u.bytes >= mib3 && u.bytes < mib3 + (256 << 10),
            "{} bytes",
            u.bytes
        );
        // The walk stops early past a limit.
        let u = measure(&t, 1 << 20);
        assert!(u.over && u.bytes > 1 << 20, "{u:?}");
        std::fs::remove_dir_all(&t).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn too_deep_counts_as_over() {
        let t = dir("deep");
        let mut p = t.join("c0/upper");
        for _ in 0..(MAX_DEPTH + 2) {
            p.push("d");
        }
        std::fs::create_dir_all(&p).unwrap();
        let u = measure(&t, u64::MAX);
        assert!(u.over, "{u:?}");
        assert!(reason(u, u64::MAX, None).contains("deeper than 512"));
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn evictions_reach_the_subscriber_once() {
        let e = Evictions::default();
        let rx = e.subscribe("t");
        e.evict("t", "first".into());
        e.evict("t", "second".into());
        assert_eq!(rx.borrow().as_deref(), Some("first"));
        e.forget("t");
        e.evict("t", "third".into());
        assert_eq!(limit_bytes(Some(21)), 21 * bytes_per_gib());
        assert_eq!(mib(1), 1);
    }
}
