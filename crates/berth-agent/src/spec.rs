//! The OCI runtime bundle's `config.json`: process (args, env, cwd, user) from the image config
//! and the container definition by Docker's rules, namespaces, mounts, cgroup resources and
//! Docker's default security settings.

use std::path::{Path, PathBuf};

use berth_api::agent::{ContainerSpec, TaskSpec};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::registry::RunConfig;
use crate::AgentError;

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub const PIDS_LIMIT: i64 = 4096;

/// Process args by Docker's rules: an `entryPoint` override replaces the image Entrypoint and
/// drops the image Cmd; a `command` override replaces Cmd.
pub fn process_args(image: Option<&RunConfig>, c: &ContainerSpec) -> Result<Vec<String>, String> {
    let img_ep = image.and_then(|i| i.entrypoint.clone()).unwrap_or_default();
    let img_cmd = image.and_then(|i| i.cmd.clone()).unwrap_or_default();
    let ep = c.entry_point.clone().unwrap_or(img_ep);
    let cmd = match (&c.command, &c.entry_point) {
        (Some(cmd), _) => cmd.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => img_cmd,
    };
    let mut args = ep;
    args.extend(cmd);
    if args.is_empty() {
        return Err(format!(
            "container {}: no command specified (the image has no Entrypoint or Cmd and the container definition sets neither entryPoint nor command)",
            c.name
        ));
    }
    Ok(args)
}

/// Environment: image Env, then the container's environment (overriding by name, in order),
/// a default PATH when none is set, and HOSTNAME.
pub fn merge_env(
    image_env: &[String],
    overrides: &[(String, String)],
    hostname: &str,
) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |k: &str, v: &str, env: &mut Vec<(String, String)>| {
        if let Some(e) = env.iter_mut().find(|(n, _)| n == k) {
            e.1 = v.to_string();
        } else {
            env.push((k.to_string(), v.to_string()));
        }
    };
    set("HOSTNAME", hostname, &mut env);
    for e in image_env {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        set(k, v, &mut env);
    }
    for (k, v) in overrides {
        set(k, v, &mut env);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// A resolved process user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Resolves `user` (`uid`, `uid:gid`, `name`, `name:group`, ...) with the rootfs's
/// `/etc/passwd` and `/etc/group` contents when available.
pub fn resolve_user(
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, String> {
    let user = user.trim();
    if user.is_empty() {
        return Ok(ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
        });
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    // passwd lines: name:x:uid:gid:gecos:home:shell
    let pw_entries: Vec<(&str, u32, u32)> = passwd
        .unwrap_or("")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some((f[0], f[2].parse().ok()?, f[3].parse().ok()?))
        })
        .collect();
    // group lines: name:x:gid:member,member
    let gr_entries: Vec<(&str, u32, Vec<&str>)> = group
        .unwrap_or("")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            let members = f
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default();
            Some((f[0], f[2].parse().ok()?, members))
        })
        .collect();
    let (uid, mut gid, name) = if let Ok(uid) = u.parse::<u32>() {
        match pw_entries.iter().find(|e| e.1 == uid) {
            Some(e) => (uid, e.2, Some(e.0)),
            None => (uid, 0, None),
        }
    } else {
        if passwd.is_none() {
            return Err(format!(
                "unable to find user {u}: no /etc/passwd in the image"
            ));
        }
        match pw_entries.iter().find(|e| e.0 == u) {
            Some(e) => (e.1, e.2, Some(e.0)),
            None => {
                return Err(format!(
                    "unable to find user {u}: no matching entries in passwd file"
                ))
            }
        }
    };
    if let Some(g) = g {
        gid = if let Ok(n) = g.parse::<u32>() {
            n
        } else {
            if group.is_none() {
                return Err(format!(
                    "unable to find group {g}: no /etc/group in the image"
                ));
            }
            match gr_entries.iter().find(|e| e.0 == g) {
                Some(e) => e.1,
                None => {
                    return Err(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                }
            }
        };
    }
    let mut additional_gids = Vec::new();
    if let Some(name) = name {
        for (_, id, members) in &gr_entries {
            if members.contains(&name) && *id != gid && !additional_gids.contains(id) {
                additional_gids.push(*id);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

/// Reads `etc/<file>` from a rootfs without following symlinks out of it (a symlinked
/// `/etc` or file is treated as absent).
pub fn read_rootfs_etc(rootfs: &Path, file: &str) -> Option<String> {
    let etc = rootfs.join("etc");
    if !std::fs::symlink_metadata(&etc).ok()?.is_dir() {
        return None;
    }
    let p = etc.join(file);
    if !std::fs::symlink_metadata(&p).ok()?.is_file() {
        return None;
    }
    std::fs::read_to_string(p).ok()
}

/// Docker's default capability set.
pub fn default_capabilities() -> Vec<Capability> {
    use Capability::*;
    vec![
        Chown,
        DacOverride,
        Fsetid,
        Fowner,
        Mknod,
        NetRaw,
        Setgid,
        Setuid,
        Setfcap,
        Setpcap,
        NetBindService,
        SysChroot,
        Kill,
        AuditWrite,
    ]
}

/// Docker's default masked paths.
pub fn masked_paths() -> Vec<String> {
    [
        "/proc/asound",
        "/proc/acpi",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ]
    .map(String::from)
    .to_vec()
}

pub fn readonly_paths() -> Vec<String> {
    [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ]
    .map(String::from)
    .to_vec()
}

/// Memory hard limit in bytes: the container's, else the task's.
pub fn memory_limit_bytes(task: &TaskSpec, c: &ContainerSpec) -> Option<i64> {
    c.memory.or(task.memory).map(|mib| mib as i64 * 1024 * 1024)
}

/// A bind mount into the container.
#[derive(Debug, Clone, PartialEq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

impl BindMount {
    pub fn new(source: PathBuf, destination: &str, read_only: bool) -> BindMount {
        BindMount {
            source,
            destination: destination.to_string(),
            read_only,
        }
    }
}

/// Everything `build_spec` needs besides the specs.
pub struct BundleInputs<'a> {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: ResolvedUser,
    pub hostname: String,
    pub rootfs: PathBuf,
    pub cgroups_path: String,
    pub cgroup_ns: bool,
    /// Join this network namespace (the task's) instead of creating one.
    pub netns: Option<PathBuf>,
    /// The agent's hard limit for an rlimit name (`nofile`, `nproc`, ...); the bundle never
    /// asks for more (the agent lacks CAP_SYS_RESOURCE on some hosts).
    pub hard_limits: &'a (dyn Fn(&str) -> Option<u64> + Sync),
    pub binds: Vec<BindMount>,
}

/// The agent's hard limit for `name` (`nofile`, `nproc`, `core`, ...), `None` = unlimited or
/// unknown.
pub fn own_hard_limit(name: &str) -> Option<u64> {
    use nix::sys::resource::{getrlimit, Resource};
    let r = match name {
        "nofile" => Resource::RLIMIT_NOFILE,
        "nproc" => Resource::RLIMIT_NPROC,
        "core" => Resource::RLIMIT_CORE,
        "memlock" => Resource::RLIMIT_MEMLOCK,
        "stack" => Resource::RLIMIT_STACK,
        "fsize" => Resource::RLIMIT_FSIZE,
        "cpu" => Resource::RLIMIT_CPU,
        "data" => Resource::RLIMIT_DATA,
        "locks" => Resource::RLIMIT_LOCKS,
        "msgqueue" => Resource::RLIMIT_MSGQUEUE,
        "nice" => Resource::RLIMIT_NICE,
        "rtprio" => Resource::RLIMIT_RTPRIO,
        "rttime" => Resource::RLIMIT_RTTIME,
        "sigpending" => Resource::RLIMIT_SIGPENDING,
        "rss" => Resource::RLIMIT_RSS,
        "as" => Resource::RLIMIT_AS,
        _ => return None,
    };
    match getrlimit(r) {
        Ok((_, hard)) if hard != nix::libc::RLIM_INFINITY => Some(hard),
        _ => None,
    }
}

fn rlimit_type(name: &str) -> Option<PosixRlimitType> {
    use PosixRlimitType::*;
    Some(match name {
        "nofile" => RlimitNofile,
        "nproc" => RlimitNproc,
        "core" => RlimitCore,
        "memlock" => RlimitMemlock,
        "stack" => RlimitStack,
        "fsize" => RlimitFsize,
        "cpu" => RlimitCpu,
        "data" => RlimitData,
        "locks" => RlimitLocks,
        "msgqueue" => RlimitMsgqueue,
        "nice" => RlimitNice,
        "rtprio" => RlimitRtprio,
        "rttime" => RlimitRttime,
        "sigpending" => RlimitSigpending,
        "rss" => RlimitRss,
        _ => return None,
    })
}

/// Process rlimits: `nofile` defaults to the agent's hard limit (at most 1,048,576), then the
/// container's `ulimits`, each clamped to the agent's own hard limit (-1 = unlimited).
pub fn rlimits(
    c: &ContainerSpec,
    hard_limits: &dyn Fn(&str) -> Option<u64>,
) -> Result<Vec<oci_spec::runtime::PosixRlimit>, AgentError> {
    let mut out: Vec<(String, u64, u64)> = Vec::new();
    let nofile = hard_limits("nofile").unwrap_or(1_048_576).min(1_048_576);
    out.push(("nofile".into(), nofile, nofile));
    for u in &c.ulimits {
        let name = u.name.to_ascii_lowercase();
        if rlimit_type(&name).is_none() {
            return Err(AgentError::Spec(format!("unknown ulimit {:?}", u.name)));
        }
        let cap = hard_limits(&name).unwrap_or(u64::MAX);
        let v = |x: i64| if x < 0 { u64::MAX } else { x as u64 };
        let hard = v(u.hard).min(cap);
        let soft = v(u.soft).min(hard);
        out.retain(|(n, _, _)| *n != name);
        out.push((name, soft, hard));
    }
    out.into_iter()
        .map(|(n, soft, hard)| {
            Ok(PosixRlimitBuilder::default()
                .typ(rlimit_type(&n).expect("checked"))
                .soft(soft)
                .hard(hard)
                .build()?)
        })
        .collect()
}

/// Every capability in this process's bounding set (`CapBnd` of `/proc/self/status`): what a
/// privileged container gets, since a runtime cannot grant what its caller lacks (hosts without
/// CAP_SYS_RESOURCE exist).
pub fn host_bounding_capabilities() -> Vec<Capability> {
    let mask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    CAP_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1u64 << i) != 0)
        .filter_map(|(_, n)| {
            serde_json::from_value(serde_json::Value::String(format!("CAP_{n}"))).ok()
        })
        .collect()
}

/// Docker's default capabilities with `linuxParameters.capabilities` applied: drop first
/// (`ALL` drops everything), then add (`ALL` adds every capability). Names may carry the
/// `CAP_` prefix.
pub fn capabilities(add: &[String], drop: &[String]) -> Result<Vec<Capability>, AgentError> {
    let parse = |n: &str| -> Result<Capability, AgentError> {
        let up = n.trim().to_ascii_uppercase();
        let full = if up.starts_with("CAP_") {
            up
        } else {
            format!("CAP_{up}")
        };
        serde_json::from_value(serde_json::Value::String(full.clone()))
            .map_err(|_| AgentError::Spec(format!("unknown capability {n:?}")))
    };
    let is_all = |n: &String| n.trim().eq_ignore_ascii_case("ALL");
    let mut caps = default_capabilities();
    if drop.iter().any(is_all) {
        caps.clear();
    }
    for d in drop.iter().filter(|d| !is_all(d)) {
        let c = parse(d)?;
        caps.retain(|x| *x != c);
    }
    if add.iter().any(is_all) {
        let all: Vec<Capability> = (0..=40)
            .filter_map(|i| {
                serde_json::from_value(serde_json::Value::String(format!(
                    "CAP_{}",
                    CAP_NAMES.get(i)?
                )))
                .ok()
            })
            .collect();
        for c in all {
            if !caps.contains(&c) {
                caps.push(c);
            }
        }
    }
    for a in add.iter().filter(|a| !is_all(a)) {
        let c = parse(a)?;
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    Ok(caps)
}

const CAP_NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

fn m(dest: &str, typ: &str, src: &str, opts: &[&str]) -> Result<Mount, AgentError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(src)
        .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// Builds the runtime spec for one container.
pub fn build_spec(
    task: &TaskSpec,
    c: &ContainerSpec,
    i: &BundleInputs,
) -> Result<Spec, AgentError> {
    if c.privileged && task.launch_type == "FARGATE" {
        return Err(AgentError::Spec(format!(
            "container {}: privileged containers are not supported on FARGATE",
            c.name
        )));
    }
    let fargate = task.launch_type == "FARGATE";
    if fargate {
        // Defence in depth: the control plane refuses these at registration already.
        if let Some(cap) = c.cap_add.iter().find(|n| {
            let up = n.trim().to_ascii_uppercase();
            up.trim_start_matches("CAP_") != "SYS_PTRACE"
        }) {
            return Err(AgentError::Spec(format!(
                "container {}: capability {cap} is not supported on FARGATE (only SYS_PTRACE)",
                c.name
            )));
        }
    }
    // A privileged container (EC2 launch type only) gets every capability, no seccomp filter
    // and no masked or read-only kernel paths, as Docker's `--privileged` does.
    let privileged = c.privileged && !fargate;
    let caps: oci_spec::runtime::Capabilities = if privileged {
        host_bounding_capabilities()
    } else {
        capabilities(&c.cap_add, &c.cap_drop)?
    }
    .into_iter()
    .collect();
    let mut user = UserBuilder::default().uid(i.user.uid).gid(i.user.gid);
    if !i.user.additional_gids.is_empty() {
        user = user.additional_gids(i.user.additional_gids.clone());
    }
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(i.args.clone())
        .env(i.env.clone())
        .cwd(i.cwd.clone())
        .user(user.build()?)
        .no_new_privileges(true)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .inheritable(oci_spec::runtime::Capabilities::new())
                .ambient(oci_spec::runtime::Capabilities::new())
                .build()?,
        )
        .rlimits(rlimits(c, i.hard_limits)?)
        .build()?;

    let mut mounts = vec![
        m("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        m(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        m(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        m(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        m(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        m(
            "/sys",
            "sysfs",
            "sysfs",
            if privileged {
                &["nosuid", "noexec", "nodev"]
            } else {
                &["nosuid", "noexec", "nodev", "ro"]
            },
        )?,
        m(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
    ];
    for b in &i.binds {
        let src = b.source.to_string_lossy();
        let opts: &[&str] = if b.read_only {
            &["rbind", "rprivate", "ro"]
        } else {
            &["rbind", "rprivate"]
        };
        mounts.push(m(&b.destination, "bind", &src, opts)?);
    }

    let mut ns_types = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Network,
    ];
    if i.cgroup_ns {
        ns_types.push(LinuxNamespaceType::Cgroup);
    }
    let namespaces = ns_types
        .into_iter()
        .map(|t| {
            let b = LinuxNamespaceBuilder::default().typ(t);
            match (&i.netns, t) {
                (Some(p), LinuxNamespaceType::Network) => b.path(p.clone()).build(),
                _ => b.build(),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut memory = LinuxMemoryBuilder::default();
    let mut has_memory = false;
    if let Some(limit) = memory_limit_bytes(task, c) {
        memory = memory.limit(limit);
        has_memory = true;
    }
    if let Some(r) = c.memory_reservation {
        memory = memory.reservation(r as i64 * 1024 * 1024);
        has_memory = true;
    }
    let mut cpu = LinuxCpuBuilder::default();
    let mut has_cpu = false;
    if let Some(units) = task.cpu {
        cpu = cpu
            .period(100_000u64)
            .quota((units as i64 * 100_000 / 1024).max(1000));
        has_cpu = true;
    }
    if c.cpu > 0 {
        cpu = cpu.shares((c.cpu as u64).max(2));
        has_cpu = true;
    }
    let mut resources = LinuxResourcesBuilder::default()
        .devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?])
        .pids(LinuxPidsBuilder::default().limit(PIDS_LIMIT).build()?);
    if has_memory {
        resources = resources.memory(memory.build()?);
    }
    if has_cpu {
        resources = resources.cpu(cpu.build()?);
    }

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(&i.cgroups_path))
        .resources(resources.build()?);
    if privileged {
        linux = linux.masked_paths(Vec::new()).readonly_paths(Vec::new());
    } else {
        linux = linux
            .masked_paths(masked_paths())
            .readonly_paths(readonly_paths())
            .seccomp(
                serde_json::from_value::<oci_spec::runtime::LinuxSeccomp>(
                    crate::seccomp::default_profile(),
                )
                .map_err(|e| AgentError::Spec(e.to_string()))?,
            );
    }
    let linux = linux.build()?;

    Ok(SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(i.rootfs.clone())
                .readonly(c.readonly_root_filesystem)
                .build()?,
        )
        .hostname(i.hostname.clone())
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(ep: Option<&[&str]>, cmd: Option<&[&str]>) -> RunConfig {
        RunConfig {
            entrypoint: ep.map(|v| v.iter().map(|s| s.to_string()).collect()),
            cmd: cmd.map(|v| v.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    fn ctr(ep: Option<&[&str]>, cmd: Option<&[&str]>) -> ContainerSpec {
        ContainerSpec {
            name: "app".into(),
            entry_point: ep.map(|v| v.iter().map(|s| s.to_string()).collect()),
            command: cmd.map(|v| v.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    #[test]
    fn args_follow_docker_rules() {
        let i = img(Some(&["/ep"]), Some(&["a", "b"]));
        assert_eq!(
            process_args(Some(&i), &ctr(None, None)).unwrap(),
            ["/ep", "a", "b"]
        );
        assert_eq!(
            process_args(Some(&i), &ctr(None, Some(&["c"]))).unwrap(),
            ["/ep", "c"]
        );
        assert_eq!(
            process_args(Some(&i), &ctr(Some(&["/x"]), None)).unwrap(),
            ["/x"]
        );
        assert_eq!(
            process_args(Some(&i), &ctr(Some(&["/x"]), Some(&["y"]))).unwrap(),
            ["/x", "y"]
        );
        let i = img(None, Some(&["sh"]));
        assert_eq!(process_args(Some(&i), &ctr(None, None)).unwrap(), ["sh"]);
        assert!(process_args(Some(&i), &ctr(Some(&[]), None))
            .unwrap_err()
            .contains("no command"));
        assert!(process_args(None, &ctr(None, None)).is_err());
        assert_eq!(
            process_args(None, &ctr(None, Some(&["ls"]))).unwrap(),
            ["ls"]
        );
    }

    #[test]
    fn env_merge() {
        let image = vec!["PATH=/bin".to_string(), "A=1".into(), "B=2".into()];
        let over = vec![
            ("B".to_string(), "3".to_string()),
            ("C".into(), "x=y".into()),
        ];
        let env = merge_env(&image, &over, "h1");
        assert_eq!(env, ["HOSTNAME=h1", "PATH=/bin", "A=1", "B=3", "C=x=y"]);
        let env = merge_env(&[], &[], "h");
        assert_eq!(
            env,
            ["HOSTNAME=h".to_string(), format!("PATH={DEFAULT_PATH}")]
        );
        let env = merge_env(&[], &[("HOSTNAME".into(), "mine".into())], "h");
        assert_eq!(env[0], "HOSTNAME=mine");
    }

    #[test]
    fn users() {
        let pw = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\napp:x:1000:1001::/home/app:/bin/sh\n";
        let gr = "root:x:0:\nstaff:x:50:app\napp:x:1001:\n";
        let r = |u: &str| resolve_user(u, Some(pw), Some(gr));
        assert_eq!(r("").unwrap().uid, 0);
        assert_eq!(
            r("1000").unwrap(),
            ResolvedUser {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![50]
            }
        );
        assert_eq!(
            r("1234").unwrap(),
            ResolvedUser {
                uid: 1234,
                gid: 0,
                additional_gids: vec![]
            }
        );
        assert_eq!(r("1234:5").unwrap().gid, 5);
        assert_eq!(r("app").unwrap().uid, 1000);
        assert_eq!(
            r("nobody:staff").unwrap(),
            ResolvedUser {
                uid: 65534,
                gid: 50,
                additional_gids: vec![]
            }
        );
        assert!(r("ghost").is_err());
        assert!(r("app:ghosts").is_err());
        assert!(resolve_user("app", None, None)
            .unwrap_err()
            .contains("no /etc/passwd"));
        assert_eq!(
            resolve_user("7:8", None, None).unwrap(),
            ResolvedUser {
                uid: 7,
                gid: 8,
                additional_gids: vec![]
            }
        );
    }

    #[test]
    fn spec_resources() {
        let task = TaskSpec {
            task_id: "t".into(),
            task_arn: "arn".into(),
            cluster_name: "default".into(),
            cpu: Some(256),
            memory: Some(512),
            ..Default::default()
        };
        let c = ContainerSpec {
            name: "app".into(),
            memory: Some(64),
            memory_reservation: Some(32),
            cpu: 128,
            readonly_root_filesystem: true,
            ulimits: vec![berth_api::agent::UlimitSpec {
                name: "nofile".into(),
                soft: 100,
                hard: 5000,
            }],
            cap_add: vec!["NET_ADMIN".into()],
            cap_drop: vec!["CAP_MKNOD".into(), "net_raw".into()],
            ..Default::default()
        };
        let inputs = BundleInputs {
            args: vec!["sh".into()],
            env: vec![],
            cwd: "/".into(),
            user: ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![],
            },
            hostname: "h".into(),
            rootfs: "/r".into(),
            cgroups_path: "/berth/t/app".into(),
            cgroup_ns: false,
            netns: Some("/run/netns/x".into()),
            hard_limits: &|n| (n == "nofile").then_some(1024),
            binds: vec![],
        };
        let spec = build_spec(&task, &c, &inputs).unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 * 1024 * 1024);
        assert_eq!(
            v["linux"]["resources"]["memory"]["reservation"],
            32 * 1024 * 1024
        );
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 25000);
        assert_eq!(v["linux"]["resources"]["cpu"]["period"], 100000);
        assert_eq!(v["linux"]["resources"]["cpu"]["shares"], 128);
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], PIDS_LIMIT);
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["linux"]["cgroupsPath"], "/berth/t/app");
        assert_eq!(v["process"]["rlimits"][0]["hard"], 1024);
        assert_eq!(v["process"]["rlimits"][0]["soft"], 100);
        assert_eq!(v["process"]["noNewPrivileges"], true);
        let caps = v["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert_eq!(caps.len(), 13, "{caps:?}");
        assert!(caps.contains(&serde_json::json!("CAP_NET_ADMIN")));
        assert!(!caps.contains(&serde_json::json!("CAP_MKNOD")));
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        assert!(
            ns.contains(&serde_json::json!({"type": "network", "path": "/run/netns/x"})),
            "{ns:?}"
        );
        assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        let mut p = c.clone();
        p.privileged = true;
        let mut ft = task.clone();
        ft.launch_type = "FARGATE".into();
        assert!(build_spec(&ft, &p, &inputs).is_err());
        // FARGATE: no added capability but SYS_PTRACE.
        assert!(c.cap_add.iter().any(|n| n.contains("NET_ADMIN")));
        assert!(build_spec(&ft, &c, &inputs).is_err());
        let mut ptrace = c.clone();
        ptrace.cap_add = vec!["SYS_PTRACE".into()];
        build_spec(&ft, &ptrace, &inputs).unwrap();
        // EC2 privileged: every capability, no seccomp filter, no masked paths.
        let pv = serde_json::to_value(build_spec(&task, &p, &inputs).unwrap()).unwrap();
        assert_eq!(
            pv["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            host_bounding_capabilities().len()
        );
        assert!(host_bounding_capabilities().len() > 30);
        assert!(pv["linux"]["seccomp"].is_null());
        assert!(pv["linux"]["maskedPaths"]
            .as_array()
            .is_none_or(|a| a.is_empty()));
        let all = capabilities(&["ALL".into()], &[]).unwrap();
        assert!(all.len() >= 40, "{}", all.len());
        assert!(capabilities(&[], &["ALL".into()]).unwrap().is_empty());
        assert!(capabilities(&["BOGUS".into()], &[]).is_err());
    }
}
