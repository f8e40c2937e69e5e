//! This host's cgroup layout (v1, hybrid, unified v2) and removal of the cgroups berth's
//! containers leave behind.

use std::path::{Path, PathBuf};

/// The cgroup layout, read from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Mount points of cgroup v1 hierarchies with their options (controllers).
    pub v1: Vec<(PathBuf, Vec<String>)>,
    /// Mount point of the cgroup2 hierarchy, if any.
    pub v2: Option<PathBuf>,
}

impl Layout {
    pub fn read() -> Layout {
        let s = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Layout::parse(&s)
    }

    /// Parses mountinfo lines: `id parent maj:min root mountpoint opts [optional...] - fstype source superopts`.
    pub fn parse(mountinfo: &str) -> Layout {
        let mut v1 = Vec::new();
        let mut v2 = None;
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let lf: Vec<&str> = left.split(' ').collect();
            let rf: Vec<&str> = right.split(' ').collect();
            if lf.len() < 5 || rf.len() < 3 {
                continue;
            }
            let mp = PathBuf::from(unescape(lf[4]));
            match rf[0] {
                "cgroup2" if v2.is_none() => v2 = Some(mp),
                "cgroup" => {
                    let opts = rf[2].split(',').map(String::from).collect();
                    v1.push((mp, opts));
                }
                _ => {}
            }
        }
        Layout { v1, v2 }
    }

    /// Only cgroup2 is mounted.
    pub fn is_unified(&self) -> bool {
        self.v1.is_empty() && self.v2.is_some()
    }

    /// v1 controllers plus a cgroup2 mount (systemd's hybrid layout).
    pub fn is_hybrid(&self) -> bool {
        !self.v1.is_empty() && self.v2.is_some()
    }

    pub fn has_v1_controller(&self, ctl: &str) -> bool {
        self.v1.iter().any(|(_, o)| o.iter().any(|x| x == ctl))
    }

    /// Every hierarchy's mount point (v1 and v2).
    pub fn mount_points(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.v1.iter().map(|(p, _)| p.clone()).collect();
        if let Some(p) = &self.v2 {
            v.push(p.clone());
        }
        v
    }
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Checks that `runtime` can work with `layout`; the error says what to do.
pub fn check_runtime_layout(runtime: &str, layout: &Layout) -> Result<(), String> {
    if layout.v1.is_empty() && layout.v2.is_none() {
        return Err("no cgroup filesystem is mounted on this host; mount cgroup2 (`mount -t cgroup2 none /sys/fs/cgroup`) or the cgroup v1 controllers".into());
    }
    let base = Path::new(runtime)
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    if base.contains("crun") && layout.is_hybrid() && !layout.has_v1_controller("hugetlb") {
        return Err(format!(
            "{runtime} refuses this host's hybrid cgroup layout (cgroup v1 controllers plus cgroup2 at {}) until hugetlb has a v1 hierarchy (\"cgroups in hybrid mode not supported\"). Run as root: `mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb` (undone by a reboot), or start berth with `--runtime runc`",
            layout.v2.as_deref().unwrap_or(Path::new("?")).display()
        ));
    }
    Ok(())
}

/// Removes the cgroup `rel` (e.g. `berth/<task-id>`) and everything below it from every
/// hierarchy. Directories still holding processes stay (and are reported).
pub fn remove_tree(layout: &Layout, rel: &str) -> Vec<String> {
    let mut failed = Vec::new();
    for mp in layout.mount_points() {
        let dir = mp.join(rel.trim_start_matches('/'));
        if dir.is_dir() {
            remove_dir_rec(&dir, &mut failed);
        }
    }
    failed
}

fn remove_dir_rec(dir: &Path, failed: &mut Vec<String>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_dir_rec(&e.path(), failed);
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            failed.push(format!("{}: {e}", dir.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
27 26 0:25 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
28 26 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
29 26 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
30 26 0:28 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
31 26 0:29 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_without_hugetlb_refused_for_crun() {
        let l = Layout::parse(HYBRID);
        assert!(l.is_hybrid());
        assert!(!l.is_unified());
        assert_eq!(l.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        let e = check_runtime_layout("crun", &l).unwrap_err();
        assert!(e.contains("mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb"), "{e}");
        assert!(e.contains("--runtime runc"));
        assert!(check_runtime_layout("/usr/bin/crun", &l).is_err());
        assert!(check_runtime_layout("runc", &l).is_ok());
        let with = format!(
            "{HYBRID}32 26 0:30 / /sys/fs/cgroup/hugetlb rw,relatime - cgroup cgroup rw,hugetlb\n"
        );
        assert!(check_runtime_layout("crun", &Layout::parse(&with)).is_ok());
    }

    #[test]
    fn unified() {
        let l = Layout::parse(
            "35 25 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert!(l.is_unified());
        assert!(check_runtime_layout("crun", &l).is_ok());
        assert!(check_runtime_layout("crun", &Layout::parse("")).is_err());
    }
}
