//! A container's OCI bundle on disk: `<task_dir>/c<idx>/{rootfs,upper,work,config.json}` with
//! an overlayfs rootfs over the image's layer snapshots; the task's `/etc/hostname`,
//! `/etc/hosts` and `/etc/resolv.conf`; task volumes (`<task_dir>/volumes/<name>` scratch
//! directories or host paths) mounted per `mountPoints` and `volumesFrom`.

use std::path::{Path, PathBuf};

use berth_api::agent::{ContainerSpec, TaskSpec};

use crate::network::TaskNet;
use crate::registry::Image;
use crate::spec::{
    build_spec, merge_env, process_args, read_rootfs_etc, resolve_user, BindMount, BundleInputs,
};
use crate::AgentError;

/// The task's hostname: the AWS-style private DNS name's first label when it has an address,
/// else the first 12 characters of the task id.
pub fn hostname(task_id: &str, net: Option<&TaskNet>) -> String {
    match net {
        Some(n) => {
            let o = n.ip.octets();
            format!("ip-{}-{}-{}-{}", o[0], o[1], o[2], o[3])
        }
        None => task_id.chars().take(12).collect(),
    }
}

/// Writes `hostname`, `hosts` and `resolv.conf` into the task directory.
pub fn write_etc_files(task_dir: &Path, hostname: &str, net: Option<&TaskNet>, region: &str) {
    let _ = std::fs::write(task_dir.join("hostname"), format!("{hostname}\n"));
    let mut hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_string();
    match net {
        Some(n) => hosts.push_str(&format!("{}\t{} {hostname}\n", n.ip, n.dns_name(region))),
        None => hosts.push_str(&format!("127.0.1.1\t{hostname}\n")),
    }
    let _ = std::fs::write(task_dir.join("hosts"), hosts);
    if let Ok(s) = std::fs::read_to_string("/etc/resolv.conf") {
        let _ = std::fs::write(task_dir.join("resolv.conf"), s);
    }
}

/// `lowerdir=..,upperdir=..,workdir=..` for a layer stack (bottom layer first).
pub fn overlay_options(layers: &[PathBuf], empty: &Path, upper: &Path, work: &Path) -> String {
    let lower: Vec<String> = if layers.is_empty() {
        vec![empty.display().to_string()]
    } else {
        layers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect()
    };
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    )
}

/// The volume mounts of container `idx`: its `mountPoints`, then those of the containers named
/// in `volumesFrom` (read-only when either says so). Returns (source dir, container path,
/// read-only). Unknown volumes are an error.
pub fn volume_mounts(
    task: &TaskSpec,
    task_dir: &Path,
    idx: usize,
) -> Result<Vec<(PathBuf, String, bool)>, String> {
    let c = &task.containers[idx];
    let mut out = Vec::new();
    let mut add = |mps: &[berth_api::agent::MountPointSpec], force_ro: bool| {
        for mp in mps {
            let Some(v) = task.volumes.iter().find(|v| v.name == mp.source_volume) else {
                return Err(format!(
                    "container {}: mount point references unknown volume {}",
                    c.name, mp.source_volume
                ));
            };
            let src = match &v.host_path {
                // Defence in depth: the control plane refuses these for FARGATE already.
                Some(_) if task.launch_type == "FARGATE" => {
                    return Err(format!(
                        "container {}: host volumes are not supported on FARGATE",
                        c.name
                    ))
                }
                Some(p) => PathBuf::from(p),
                None => task_dir
                    .join("volumes")
                    .join(crate::task::safe_name(&v.name)),
            };
            out.push((src, mp.container_path.clone(), mp.read_only || force_ro));
        }
        Ok(())
    };
    add(&c.mount_points, false)?;
    for vf in &c.volumes_from {
        let Some(src) = task
            .containers
            .iter()
            .find(|x| x.name == vf.source_container)
        else {
            return Err(format!(
                "container {}: volumesFrom references unknown container {}",
                c.name, vf.source_container
            ));
        };
        add(&src.mount_points, vf.read_only)?;
    }
    Ok(out)
}

/// Everything about the task a bundle needs besides the container.
pub struct TaskEnv<'a> {
    pub task_dir: &'a Path,
    pub hostname: &'a str,
    pub net: Option<&'a TaskNet>,
    /// `ECS_CONTAINER_METADATA_URI_V4` base (`http://<gw>:<port>/v4`), when served.
    pub metadata_base: Option<String>,
    pub cgroup_ns: bool,
    /// The agent's own hard limits, by `RLIMIT_*` name (`nofile`, `nproc`, ...).
    pub hard_limits: &'a (dyn Fn(&str) -> Option<u64> + Sync),
    pub region: &'a str,
    /// The init for containers with `initProcessEnabled`: the agent's installed shim
    /// executable (`berth-shim -- <command>`), bind-mounted read-only at [`INIT_PATH`].
    pub init: Option<&'a Path>,
}

/// Where a container's init process is mounted (ECS `initProcessEnabled`).
pub const INIT_PATH: &str = "/dev/init";

/// Mounts container `idx`'s rootfs and writes its `config.json`. Returns the bundle directory.
pub fn prepare(
    spec: &TaskSpec,
    idx: usize,
    img: &Image,
    env: &TaskEnv,
) -> Result<PathBuf, AgentError> {
    let c: &ContainerSpec = &spec.containers[idx];
    let cdir = crate::shim::container_dir(env.task_dir, idx);
    let rootfs = cdir.join("rootfs");
    let upper = cdir.join("upper");
    let work = cdir.join("work");
    let empty = cdir.join("empty");
    for d in [&rootfs, &upper, &work] {
        std::fs::create_dir_all(d)?;
    }
    if img.layers.is_empty() {
        std::fs::create_dir_all(&empty)?;
    }
    let opts = overlay_options(&img.layers, &empty, &upper, &work);
    nix::mount::mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| AgentError::Runtime(format!("mounting the overlay rootfs: {e}")))?;

    let rc = img.config.config.as_ref();
    let mut args = process_args(rc, c).map_err(AgentError::Spec)?;
    let user_str = c
        .user
        .clone()
        .filter(|u| !u.is_empty())
        .or_else(|| rc.and_then(|r| r.user.clone()))
        .unwrap_or_default();
    let user = if user_str.is_empty() {
        resolve_user("", None, None)
    } else {
        resolve_user(
            &user_str,
            read_rootfs_etc(&rootfs, "passwd").as_deref(),
            read_rootfs_etc(&rootfs, "group").as_deref(),
        )
    }
    .map_err(AgentError::Spec)?;
    let image_env = rc.and_then(|r| r.env.clone()).unwrap_or_default();
    let mut extra_env = c.environment.clone();
    if let Some(base) = &env.metadata_base {
        let uri = format!("{base}/{}-{idx}", spec.task_id);
        for k in [
            "ECS_CONTAINER_METADATA_URI_V4",
            "ECS_CONTAINER_METADATA_URI",
        ] {
            if !extra_env.iter().any(|(n, _)| n == k) {
                extra_env.push((k.to_string(), uri.clone()));
            }
        }
    }
    if spec.launch_type == "FARGATE" && !extra_env.iter().any(|(n, _)| n == "AWS_EXECUTION_ENV") {
        extra_env.push(("AWS_EXECUTION_ENV".into(), "AWS_ECS_FARGATE".into()));
    }
    if !env.region.is_empty() {
        for k in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
            if !extra_env.iter().any(|(n, _)| n == k) {
                extra_env.push((k.to_string(), env.region.to_string()));
            }
        }
    }
    let process_env = merge_env(&image_env, &extra_env, env.hostname);
    let cwd = c
        .working_directory
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| {
            rc.and_then(|r| r.working_dir.clone())
                .filter(|w| !w.is_empty())
        })
        .unwrap_or_else(|| "/".into());
    let mut binds: Vec<BindMount> = vec![
        BindMount::new(env.task_dir.join("hostname"), "/etc/hostname", false),
        BindMount::new(env.task_dir.join("hosts"), "/etc/hosts", false),
    ];
    if env.task_dir.join("resolv.conf").exists() {
        binds.push(BindMount::new(
            env.task_dir.join("resolv.conf"),
            "/etc/resolv.conf",
            false,
        ));
    }
    for (src, dest, ro) in volume_mounts(spec, env.task_dir, idx).map_err(AgentError::Spec)? {
        std::fs::create_dir_all(&src)?;
        binds.push(BindMount::new(src, &dest, ro));
    }
    if c.init_process_enabled {
        if let Some(init) = env.init {
            args.splice(0..0, [INIT_PATH.to_string(), "--".to_string()]);
            binds.push(BindMount::new(init.to_path_buf(), INIT_PATH, true));
        }
    }
    let name = crate::task::safe_name(&c.name);
    let inputs = BundleInputs {
        args,
        env: process_env,
        cwd,
        user,
        hostname: env.hostname.to_string(),
        rootfs: rootfs.clone(),
        cgroups_path: format!("/{}/{name}", crate::task::cgroup_task_rel(&spec.task_id)),
        cgroup_ns: env.cgroup_ns,
        netns: env.net.map(|n| n.netns.clone()),
        hard_limits: env.hard_limits,
        binds,
    };
    let oci = build_spec(spec, c, &inputs)?;
    let json = serde_json::to_vec(&oci).map_err(|e| AgentError::Spec(e.to_string()))?;
    std::fs::write(cdir.join("config.json"), json)?;
    Ok(cdir)
}

/// Unmounts every container rootfs of a task.
pub fn unmount_all(task_dir: &Path) {
    let Ok(rd) = std::fs::read_dir(task_dir) else {
        return;
    };
    for e in rd.flatten() {
        let rootfs = e.path().join("rootfs");
        if rootfs.is_dir() {
            match nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(err) => tracing::warn!("umount {}: {err}", rootfs.display()),
            }
        }
    }
}

fn is_mount_point(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(a), Some(parent)) = (std::fs::symlink_metadata(p), p.parent()) else {
        return false;
    };
    let Ok(b) = std::fs::symlink_metadata(parent) else {
        return false;
    };
    a.dev() != b.dev()
}

/// Removes a task directory unless a rootfs in it is still mounted (never delete through a
/// mount).
pub fn remove_task_dir(task_dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(task_dir) {
        for e in rd.flatten() {
            if is_mount_point(&e.path().join("rootfs")) {
                tracing::error!(
                    "{} is still mounted; leaving {}",
                    e.path().join("rootfs").display(),
                    task_dir.display()
                );
                return;
            }
        }
    }
    if let Err(e) = std::fs::remove_dir_all(task_dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("removing {}: {e}", task_dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::agent::{MountPointSpec, VolumeFromSpec, VolumeSpec};

    #[test]
    fn overlay() {
        let o = overlay_options(
            &[PathBuf::from("/s/1/fs"), PathBuf::from("/s/2/fs")],
            Path::new("/e"),
            Path::new("/u"),
            Path::new("/w"),
        );
        assert_eq!(o, "lowerdir=/s/2/fs:/s/1/fs,upperdir=/u,workdir=/w");
        assert_eq!(
            overlay_options(&[], Path::new("/e"), Path::new("/u"), Path::new("/w")),
            "lowerdir=/e,upperdir=/u,workdir=/w"
        );
    }

    #[test]
    fn volumes() {
        let mp = |v: &str, p: &str, ro: bool| MountPointSpec {
            source_volume: v.into(),
            container_path: p.into(),
            read_only: ro,
        };
        let task = TaskSpec {
            volumes: vec![
                VolumeSpec {
                    name: "scratch".into(),
                    host_path: None,
                },
                VolumeSpec {
                    name: "host".into(),
                    host_path: Some("/srv/data".into()),
                },
            ],
            containers: vec![
                ContainerSpec {
                    name: "a".into(),
                    mount_points: vec![mp("scratch", "/data", false), mp("host", "/h", true)],
                    ..Default::default()
                },
                ContainerSpec {
                    name: "b".into(),
                    volumes_from: vec![VolumeFromSpec {
                        source_container: "a".into(),
                        read_only: true,
                    }],
                    ..Default::default()
                },
                ContainerSpec {
                    name: "c".into(),
                    mount_points: vec![mp("ghost", "/g", false)],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let td = Path::new("/t");
        assert_eq!(
            volume_mounts(&task, td, 0).unwrap(),
            vec![
                (
                    PathBuf::from("/t/volumes/scratch"),
                    "/data".to_string(),
                    false
                ),
                (PathBuf::from("/srv/data"), "/h".to_string(), true)
            ]
        );
        let b = volume_mounts(&task, td, 1).unwrap();
        assert!(b.iter().all(|m| m.2), "{b:?}");
        assert!(volume_mounts(&task, td, 2).is_err());
    }
}
