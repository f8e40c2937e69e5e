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

/// The directory of cgroup `rel` in the hierarchy that has v1 controller `ctl`, or in the v2
/// hierarchy on a unified host.
pub fn controller_dir(layout: &Layout, ctl: &str, rel: &str) -> Option<PathBuf> {
    let rel = rel.trim_start_matches('/');
    if let Some((mp, _)) = layout.v1.iter().find(|(_, o)| o.iter().any(|x| x == ctl)) {
        return Some(mp.join(rel));
    }
    if layout.is_unified() {
        return layout.v2.as_ref().map(|p| p.join(rel));
    }
    None
}

/// The `cgroup.procs` of the cgroup this process is in, in one hierarchy: writing our own pid
/// there is a no-op move that still takes the kernel's cgroup attach path (see
/// [`AttachPrimer`]). `None` when no such file exists.
pub fn attach_target(layout: &Layout) -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    // `hierarchy-id:controllers:path`; v2 is `0::path`.
    own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctls, path) = (f.next()?, f.next()?, f.next()?);
        let base = if ctls.is_empty() {
            layout.v2.clone()?
        } else {
            controller_mount(layout, ctls.split(',').next()?)?
        };
        let p = base.join(path.trim_start_matches('/')).join("cgroup.procs");
        p.exists().then_some(p)
    })
}

/// Keeps the kernel's cgroup attach path warm while tasks are starting. Every cgroup attach
/// (v1 and v2) takes the global `cgroup_threadgroup_rwsem` for writing, and when no attach
/// happened in the last RCU grace period that costs a full `synchronize_rcu()` (11-15 ms
/// measured here, HZ=250) inside `<runtime> run`, on the task's critical path. After each
/// [`AttachPrimer::touch`] a thread moves this process into the cgroup it is already in
/// ([`attach_target`]) every [`PRIME_INTERVAL`] for [`PRIME_FOR`]: the first move pays the
/// cold wait while the image, network and bundle are prepared, the next ones keep the path warm
/// for back-to-back starts (the kernel forgets a warm path one grace period after the last
/// attach). Costs under 1% of one CPU while active, nothing otherwise; hosts mounted with
/// `favordynmods` never pay the wait and there this is merely cheap. Errors are ignored (it is
/// only an optimisation).
pub struct AttachPrimer {
    target: Option<PathBuf>,
    until: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How often an active [`AttachPrimer`] primes (below one grace period at HZ=250).
pub const PRIME_INTERVAL: std::time::Duration = std::time::Duration::from_millis(3);
/// How long an [`AttachPrimer`] stays active after the last task start.
pub const PRIME_FOR: std::time::Duration = std::time::Duration::from_secs(2);

impl AttachPrimer {
    pub fn new(layout: Layout) -> std::sync::Arc<AttachPrimer> {
        std::sync::Arc::new(AttachPrimer {
            target: attach_target(&layout),
            until: std::sync::Mutex::new(None),
        })
    }

    /// A task is starting: prime now (in the background) and keep priming for [`PRIME_FOR`].
    pub fn touch(self: &std::sync::Arc<Self>) {
        let Some(target) = self.target.clone() else {
            return;
        };
        let until = std::time::Instant::now() + PRIME_FOR;
        let start = {
            let mut u = self.until.lock().unwrap();
            let start = u.is_none();
            *u = Some(until);
            start
        };
        if !start {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("cgroup-primer".into())
            .spawn(move || {
                use std::io::Write;
                let pid = std::process::id().to_string();
                let f = std::fs::OpenOptions::new().write(true).open(&target);
                loop {
                    if let Ok(mut f) = f.as_ref() {
                        let _ = f.write_all(pid.as_bytes());
                    }
                    std::thread::sleep(PRIME_INTERVAL);
                    let mut u = me.until.lock().unwrap();
                    if f.is_err() || u.is_none_or(|t| std::time::Instant::now() >= t) {
                        *u = None;
                        return;
                    }
                }
            });
        if spawned.is_err() {
            *self.until.lock().unwrap() = None;
        }
    }
}

fn controller_mount(layout: &Layout, ctl: &str) -> Option<PathBuf> {
    layout
        .v1
        .iter()
        .find(|(_, o)| o.iter().any(|x| x == ctl))
        .map(|(m, _)| m.clone())
}

/// The parent cgroup of every task (`berth/<task-id>`), shared by all agents on the host.
pub const PARENT: &str = "berth";

/// How many tasks (processes and threads) the host can have at once: the smaller of
/// `/proc/sys/kernel/pid_max` and `/proc/sys/kernel/threads-max`. `None` when unreadable.
pub fn host_pid_limit() -> Option<u64> {
    let num = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    match (
        num("/proc/sys/kernel/pid_max"),
        num("/proc/sys/kernel/threads-max"),
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The aggregate `pids.max` of the [`PARENT`] cgroup for a host limit of `host` pids: all
/// tasks together may use `host - reserve`, where `reserve = clamp(host / 4, 1024, host / 2)`
/// is kept for the host itself (the agent, sshd, a root shell to clean up). With Linux's
/// default `pid_max` of 32768 that is 24576 for the tasks and 8192 for the host, so eight
/// fork-bombing tasks at their own limit of 4096 each cannot exhaust the host's pids.
pub fn parent_pids_max(host: u64) -> u64 {
    let reserve = (host / 4).max(1024).min(host / 2);
    host - reserve
}

/// Sets the aggregate pids limit ([`parent_pids_max`] of [`host_pid_limit`]) on the
/// [`PARENT`] cgroup, creating it: in the v1 `pids` hierarchy (v1 and hybrid hosts) or the
/// v2 hierarchy with the `pids` controller enabled below the root (unified hosts). Returns
/// the `pids.max` file and the value written; `None` when this host has no pids controller.
pub fn limit_parent_pids(layout: &Layout) -> Result<Option<(PathBuf, u64)>, String> {
    let Some(host) = host_pid_limit() else {
        return Ok(None);
    };
    let max = parent_pids_max(host);
    let dir = if layout.has_v1_controller("pids") {
        controller_dir(layout, "pids", PARENT)
    } else if layout.is_unified() {
        let root = layout.v2.clone();
        if let Some(r) = &root {
            let _ = std::fs::write(r.join("cgroup.subtree_control"), "+pids");
        }
        root.map(|r| r.join(PARENT))
    } else {
        None
    };
    let Some(dir) = dir else {
        return Ok(None);
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let f = dir.join("pids.max");
    if !f.exists() {
        return Ok(None);
    }
    std::fs::write(&f, max.to_string()).map_err(|e| format!("{}: {e}", f.display()))?;
    Ok(Some((f, max)))
}

/// Task-level limits on the parent cgroup `rel` (`berth/<task-id>`) of the task's containers:
/// CPU units -> CFS quota over a 100 ms period (1024 units = 1 CPU), MiB -> memory hard limit,
/// and [`crate::spec::PIDS_LIMIT`] pids for all its containers together.
/// Creates the cgroup; on a unified host enables the controllers down the path. Errors are
/// returned as text (the task does not start without its limits).
pub fn setup_task(
    layout: &Layout,
    rel: &str,
    cpu_units: Option<u32>,
    memory_mib: Option<u32>,
) -> Result<(), String> {
    let write = |p: PathBuf, v: String| {
        std::fs::write(&p, &v).map_err(|e| format!("writing {v:?} to {}: {e}", p.display()))
    };
    let quota = cpu_units.map(|u| (u as u64 * 100_000 / 1024).max(1000));
    let mem = memory_mib.map(|m| m as u64 * 1024 * 1024);
    if layout.is_unified() {
        let Some(root) = &layout.v2 else {
            return Ok(());
        };
        let mut dir = root.clone();
        for part in rel.trim_start_matches('/').split('/') {
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory +pids");
            dir = dir.join(part);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let _ = std::fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory +pids");
        if let Some(q) = quota {
            write(dir.join("cpu.max"), format!("{q} 100000"))?;
        }
        if let Some(m) = mem {
            write(dir.join("memory.max"), m.to_string())?;
        }
        if dir.join("pids.max").exists() {
            write(dir.join("pids.max"), crate::spec::PIDS_LIMIT.to_string())?;
        }
        return Ok(());
    }
    if let Some(d) = controller_dir(layout, "pids", rel) {
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        write(d.join("pids.max"), crate::spec::PIDS_LIMIT.to_string())?;
    }
    if let Some(q) = quota {
        if let Some(d) = controller_dir(layout, "cpu", rel) {
            std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            write(d.join("cpu.cfs_period_us"), "100000".into())?;
            write(d.join("cpu.cfs_quota_us"), q.to_string())?;
        }
    }
    if let Some(m) = mem {
        if let Some(d) = controller_dir(layout, "memory", rel) {
            std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            write(d.join("memory.limit_in_bytes"), m.to_string())?;
        }
    }
    Ok(())
}

/// Files whose `oom_kill` counter tells whether cgroup `rel` saw an OOM kill (v1
/// `memory.oom_control`, v2 `memory.events`).
pub fn oom_files(layout: &Layout, rel: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = controller_dir(layout, "memory", rel) {
        v.push(d.join(if layout.is_unified() {
            "memory.events"
        } else {
            "memory.oom_control"
        }));
    }
    v
}

/// What the task metadata endpoint's stats documents report about cgroup `rel` (Docker's
/// stats fields). Missing values are 0 (or empty).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stats {
    /// `memory.usage_in_bytes` (v1) / `memory.current` (v2), bytes.
    pub memory_usage: u64,
    /// `memory.max_usage_in_bytes` (v1) / `memory.peak` (v2), bytes.
    pub memory_max_usage: u64,
    /// The hard limit, bytes (v2 `max` reads as 0).
    pub memory_limit: u64,
    /// `memory.stat`, name -> value.
    pub memory_stat: Vec<(String, u64)>,
    /// CPU time in ns: total, in kernel mode, in user mode.
    pub cpu_total_ns: u64,
    pub cpu_kernel_ns: u64,
    pub cpu_user_ns: u64,
    /// CFS: periods, throttled periods, throttled time (ns).
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ns: u64,
    pub pids: u64,
}

/// Parses `name value` lines (`memory.stat`, `cpu.stat`, `cpuacct.stat`).
pub fn flat_keyed(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// [`Stats`] of cgroup `rel` (v1 controllers or the v2 hierarchy).
pub fn stats(layout: &Layout, rel: &str) -> Stats {
    let read = |p: Option<PathBuf>| p.and_then(|p| std::fs::read_to_string(p).ok());
    let num = |p: Option<PathBuf>| -> u64 {
        read(p)
            .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
            .unwrap_or(0)
    };
    let get = |kv: &[(String, u64)], k: &str| {
        kv.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    };
    if layout.is_unified() {
        let d = controller_dir(layout, "memory", rel);
        let f = |name: &str| d.as_ref().map(|d| d.join(name));
        let cpu = flat_keyed(&read(f("cpu.stat")).unwrap_or_default());
        return Stats {
            memory_usage: num(f("memory.current")),
            memory_max_usage: num(f("memory.peak")),
            memory_limit: num(f("memory.max")),
            memory_stat: flat_keyed(&read(f("memory.stat")).unwrap_or_default()),
            cpu_total_ns: get(&cpu, "usage_usec") * 1000,
            cpu_kernel_ns: get(&cpu, "system_usec") * 1000,
            cpu_user_ns: get(&cpu, "user_usec") * 1000,
            periods: get(&cpu, "nr_periods"),
            throttled_periods: get(&cpu, "nr_throttled"),
            throttled_ns: get(&cpu, "throttled_usec") * 1000,
            pids: num(f("pids.current")),
        };
    }
    let mem = |name: &str| controller_dir(layout, "memory", rel).map(|d| d.join(name));
    // cpuacct.stat is in USER_HZ ticks (100 per second on Linux).
    let acct = flat_keyed(
        &read(controller_dir(layout, "cpuacct", rel).map(|d| d.join("cpuacct.stat")))
            .unwrap_or_default(),
    );
    let cfs = flat_keyed(
        &read(controller_dir(layout, "cpu", rel).map(|d| d.join("cpu.stat"))).unwrap_or_default(),
    );
    Stats {
        memory_usage: num(mem("memory.usage_in_bytes")),
        memory_max_usage: num(mem("memory.max_usage_in_bytes")),
        memory_limit: num(mem("memory.limit_in_bytes")),
        memory_stat: flat_keyed(&read(mem("memory.stat")).unwrap_or_default()),
        cpu_total_ns: num(controller_dir(layout, "cpuacct", rel).map(|d| d.join("cpuacct.usage"))),
        cpu_kernel_ns: get(&acct, "system") * 10_000_000,
        cpu_user_ns: get(&acct, "user") * 10_000_000,
        periods: get(&cfs, "nr_periods"),
        throttled_periods: get(&cfs, "nr_throttled"),
        throttled_ns: get(&cfs, "throttled_time"),
        pids: num(controller_dir(layout, "pids", rel).map(|d| d.join("pids.current"))),
    }
}

/// The host's CPU time in ns since boot as Docker's `system_cpu_usage` counts it: the sum of
/// the `cpu` line of `/proc/stat` (user .. steal, USER_HZ = 100 ticks per second).
pub fn system_cpu_ns(proc_stat: &str) -> u64 {
    proc_stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|x| x.parse::<u64>().ok())
                .sum::<u64>()
                * 10_000_000
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn attach_target_is_our_own_cgroup() {
        let layout = crate::cgroups::Layout::read();
        if layout.v1.is_empty() && layout.v2.is_none() {
            return; // no cgroups mounted here
        }
        let t = crate::cgroups::attach_target(&layout).expect("our cgroup.procs");
        let procs = std::fs::read_to_string(&t).unwrap();
        let me = std::process::id().to_string();
        assert!(procs.lines().any(|l| l == me), "{} lacks {me}", t.display());
    }

    #[test]
    fn cpu_and_keyed_files() {
        assert_eq!(
            crate::cgroups::system_cpu_ns(
                "cpu  10 0 5 85 0 0 0 0 0 0\ncpu0 5 0 2 40 0 0 0 0 0 0\n"
            ),
            100 * 10_000_000
        );
        assert_eq!(crate::cgroups::system_cpu_ns(""), 0);
        let kv = crate::cgroups::flat_keyed("user 12\nsystem 3\nbad line\n");
        assert_eq!(
            kv,
            vec![("user".to_string(), 12), ("system".to_string(), 3)]
        );
    }

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
    fn parent_pids_formula() {
        assert_eq!(parent_pids_max(32768), 24576);
        assert_eq!(parent_pids_max(4_194_304), 3_145_728);
        // A small host keeps at least 1024, and tasks get at least half.
        assert_eq!(parent_pids_max(2048), 1024);
        assert_eq!(parent_pids_max(1000), 500);
    }

    #[test]
    fn parent_pids_limit_is_set_below_the_host_limit() {
        let layout = Layout::read();
        if !nix::unistd::geteuid().is_root()
            || !layout.has_v1_controller("pids") && !layout.is_unified()
        {
            return;
        }
        let (file, max) = limit_parent_pids(&layout)
            .unwrap()
            .expect("a pids controller");
        let got: u64 = std::fs::read_to_string(&file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(got, max);
        assert!(got < host_pid_limit().unwrap(), "{got}");
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
