//! awsvpc task networking (DESIGN §5): a network namespace per task (bind-mounted at
//! `<data_dir>/netns/<task-id>`, loopback up), attached to the agent's bridge by the standard
//! CNI `bridge` plugin with `host-local` IPAM (CNI spec 1.0.0, plugins from
//! `containernetworking-plugins` in `/usr/lib/cni`), the address released by CNI DEL when the
//! task ends. Container ports are published on 127.0.0.1 of the host by TCP and UDP relays in
//! the agent (best effort: a port taken on the host is skipped), and each task answers on its
//! own address from the host. Host isolation: IPv4 traffic from the bridge to the host is
//! dropped except replies and TCP to `<gateway>:<metadata port>` (the task metadata endpoint);
//! traffic from the bridge to other interfaces is not forwarded. IPv6 is closed twice: it is
//! disabled on the bridge (`net.ipv6.conf.<bridge>.disable_ipv6=1`, so it has no link-local
//! address) and on the task's interfaces (`net.ipv6.conf.default.disable_ipv6=1` in the task
//! namespace before CNI creates `eth0`; the task's own `lo` keeps `::1`), and ip6tables drops
//! everything from the bridge to the host or beyond.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::AgentError;

/// Where and how task networks are made.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Bridge interface name (at most 15 bytes), e.g. `berth0`.
    pub bridge: String,
    /// The task subnet in CIDR form, e.g. `10.88.0.0/16`; the bridge takes its first address.
    pub subnet: String,
    /// Directory of the CNI plugin binaries.
    pub cni_path: PathBuf,
    /// host-local's allocation directory.
    pub ipam_dir: PathBuf,
    /// Where the namespaces are bind-mounted.
    pub netns_dir: PathBuf,
    /// Port the task metadata endpoint listens on at the bridge address.
    pub metadata_port: u16,
}

/// One task's network, saved as `<task_dir>/net.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskNet {
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
}

impl TaskNet {
    /// `10.88.0.0/16` for 10.88.0.5/16.
    pub fn subnet_cidr(&self) -> String {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix as u32)
        };
        format!(
            "{}/{}",
            Ipv4Addr::from(u32::from(self.ip) & mask),
            self.prefix
        )
    }

    /// AWS-style private DNS name: `ip-10-88-0-5.<region>.compute.internal`.
    pub fn dns_name(&self, region: &str) -> String {
        let o = self.ip.octets();
        format!(
            "ip-{}-{}-{}-{}.{region}.compute.internal",
            o[0], o[1], o[2], o[3]
        )
    }
}

/// The bridge address: the subnet's first host address (`10.88.0.1` for `10.88.0.0/16`).
pub fn gateway_of(subnet: &str) -> Option<Ipv4Addr> {
    let (a, p) = subnet.split_once('/')?;
    let a: Ipv4Addr = a.parse().ok()?;
    let p: u32 = p.parse().ok()?;
    if !(8..=30).contains(&p) {
        return None;
    }
    let mask = u32::MAX << (32 - p);
    Some(Ipv4Addr::from((u32::from(a) & mask) + 1))
}

/// The CNI network configuration for the bridge plugin.
pub fn cni_config(cfg: &NetConfig) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("berth-{}", cfg.bridge),
        "type": "bridge",
        "bridge": cfg.bridge,
        "isGateway": true,
        "ipMasq": false,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": cfg.subnet}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": cfg.ipam_dir,
        }
    })
}

/// Parses a CNI ADD result into the task's address, gateway and MAC.
pub fn parse_result(v: &serde_json::Value, netns: &Path) -> Result<TaskNet, String> {
    let ip = v["ips"]
        .as_array()
        .and_then(|a| a.first())
        .ok_or("CNI result without ips")?;
    let (addr, prefix) = ip["address"]
        .as_str()
        .and_then(|a| a.split_once('/'))
        .ok_or("CNI result without an address")?;
    let iface = ip["interface"].as_u64().unwrap_or(2) as usize;
    let mac = v["interfaces"]
        .get(iface)
        .and_then(|i| i["mac"].as_str())
        .unwrap_or("")
        .to_string();
    Ok(TaskNet {
        netns: netns.to_path_buf(),
        ip: addr
            .parse()
            .map_err(|e| format!("bad address {addr}: {e}"))?,
        prefix: prefix.parse().map_err(|_| format!("bad prefix {prefix}"))?,
        gateway: ip["gateway"]
            .as_str()
            .and_then(|g| g.parse().ok())
            .ok_or("CNI result without a gateway")?,
        mac,
    })
}

/// Creates a network namespace with loopback up, bind-mounted at `path`. Runs in a thread of
/// its own (unshare affects only the calling thread, which then ends).
pub fn create_netns(path: &Path) -> std::io::Result<()> {
    let path = path.to_path_buf();
    std::thread::spawn(move || -> std::io::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        loopback_up()?;
        // Interfaces made from now on in this namespace (the task's eth0) have no IPv6.
        // `/proc/sys/net` is the namespace of the thread that opens it: this one.
        disable_ipv6("default")?;
        std::fs::File::create(&path)?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &path,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            let _ = std::fs::remove_file(&path);
            std::io::Error::from(e)
        })
    })
    .join()
    .map_err(|_| std::io::Error::other("netns thread panicked"))?
}

fn loopback_up() -> std::io::Result<()> {
    use nix::libc;
    // SAFETY: plain socket + ioctl on a zeroed ifreq naming "lo".
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as i16;
        let r = libc::ioctl(s, libc::SIOCSIFFLAGS as _, &req);
        libc::close(s);
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Writes `net.ipv6.conf.<iface>.disable_ipv6 = 1` in the calling thread's network namespace
/// (nothing to do when the kernel has no IPv6).
pub fn disable_ipv6(iface: &str) -> std::io::Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{iface}/disable_ipv6");
    match std::fs::write(&path, b"1") {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !ipv6_present() => Ok(()),
        r => r,
    }
}

fn ipv6_present() -> bool {
    Path::new("/proc/sys/net/ipv6").exists()
}

/// Removes a namespace made by [`create_netns`] (a missing one is fine).
pub fn remove_netns(path: &Path) {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => tracing::warn!("umount {}: {e}", path.display()),
    }
    let _ = std::fs::remove_file(path);
}

/// Runs the bridge plugin with `command` (`ADD` or `DEL`) for `task_id`.
async fn cni(
    cfg: &NetConfig,
    command: &str,
    task_id: &str,
    netns: &Path,
) -> Result<serde_json::Value, String> {
    let conf = serde_json::to_vec(&cni_config(cfg)).unwrap_or_default();
    let mut child = tokio::process::Command::new(cfg.cni_path.join("bridge"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", task_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &cfg.cni_path)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run CNI plugin {}: {e}",
                cfg.cni_path.join("bridge").display()
            )
        })?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(&conf).await;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("CNI {command}: {e}"))?;
    if !out.status.success() {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let msg = v["msg"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
        return Err(format!("CNI bridge {command} failed: {msg}"));
    }
    if out.stdout.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("CNI {command}: bad result: {e}"))
}

/// Creates the task's namespace and attaches it to the bridge.
pub async fn setup(cfg: &NetConfig, task_id: &str) -> Result<TaskNet, AgentError> {
    let netns = cfg.netns_dir.join(task_id);
    std::fs::create_dir_all(&cfg.netns_dir)?;
    {
        let netns = netns.clone();
        tokio::task::spawn_blocking(move || create_netns(&netns))
            .await
            .map_err(|e| AgentError::Runtime(e.to_string()))?
            .map_err(|e| AgentError::Runtime(format!("creating the network namespace: {e}")))?;
    }
    match cni(cfg, "ADD", task_id, &netns).await {
        Ok(v) => {
            // The bridge exists now (CNI makes it on first use): no IPv6 on it, so it has no
            // link-local address a task could reach the host by.
            if let Err(e) = disable_ipv6(&cfg.bridge) {
                let _ = cni(cfg, "DEL", task_id, &netns).await;
                remove_netns(&netns);
                return Err(AgentError::Runtime(format!(
                    "cannot disable IPv6 on bridge {}: {e}",
                    cfg.bridge
                )));
            }
            parse_result(&v, &netns).map_err(AgentError::Runtime)
        }
        Err(e) => {
            let _ = cni(cfg, "DEL", task_id, &netns).await;
            remove_netns(&netns);
            Err(AgentError::Runtime(e))
        }
    }
}

/// Prefix of the warm pool's namespace (and CNI container) ids.
pub const POOL_PREFIX: &str = "pool-";
/// How many attached namespaces the warm pool keeps ready.
pub const POOL_SIZE: usize = 4;

/// The CNI container id (and namespace file name) of a task's network: the name of its
/// namespace file (the task id, or a `pool-` id when it came from the warm pool).
pub fn net_id(n: &TaskNet) -> Option<String> {
    n.netns.file_name().map(|f| f.to_string_lossy().to_string())
}

/// A small warm pool of network namespaces already attached to the bridge (as Fargate
/// pre-provisions ENIs): a task takes one at start and the pool refills in the background.
/// Bounded by [`POOL_SIZE`]; entries are released by [`NetPool::drain`] and, after a crash,
/// by [`sweep_pool`] on the next start.
/// How long after a take the pool starts refilling.
pub const REFILL_DELAY: std::time::Duration = std::time::Duration::from_millis(150);

pub struct NetPool {
    cfg: NetConfig,
    ready: std::sync::Mutex<std::collections::VecDeque<TaskNet>>,
    filling: std::sync::atomic::AtomicBool,
    closed: std::sync::atomic::AtomicBool,
    seq: std::sync::atomic::AtomicU64,
}

impl NetPool {
    pub fn new(cfg: NetConfig) -> std::sync::Arc<NetPool> {
        std::sync::Arc::new(NetPool {
            cfg,
            ready: std::sync::Mutex::new(std::collections::VecDeque::new()),
            filling: std::sync::atomic::AtomicBool::new(false),
            closed: std::sync::atomic::AtomicBool::new(false),
            seq: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Takes a ready network, or None when the pool is empty. The refill starts
    /// [`REFILL_DELAY`] later, so that the CNI plugins it runs do not compete for the CPUs with
    /// the start of the task that took the network.
    pub fn take(self: &std::sync::Arc<Self>) -> Option<TaskNet> {
        let n = self.ready.lock().unwrap().pop_front();
        let pool = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(REFILL_DELAY).await;
            pool.refill();
        });
        n
    }

    /// Fills the pool up to [`POOL_SIZE`] in the background (one fill at a time; a failure
    /// ends the fill until the next take).
    pub fn refill(self: &std::sync::Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.closed.load(Ordering::Acquire) || self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            loop {
                if pool.closed.load(Ordering::Acquire)
                    || pool.ready.lock().unwrap().len() >= POOL_SIZE
                {
                    break;
                }
                let id = format!(
                    "{POOL_PREFIX}{}-{}",
                    std::process::id(),
                    pool.seq.fetch_add(1, Ordering::Relaxed)
                );
                if pool.cfg.netns_dir.join(&id).exists() {
                    continue;
                }
                match setup(&pool.cfg, &id).await {
                    Ok(_) if pool.closed.load(Ordering::Acquire) => {
                        teardown(&pool.cfg, &id).await;
                        break;
                    }
                    Ok(n) => pool.ready.lock().unwrap().push_back(n),
                    Err(e) => {
                        tracing::warn!("network pool: {e}");
                        break;
                    }
                }
            }
            pool.filling.store(false, Ordering::Release);
        });
    }

    /// Releases every ready network and stops refilling (agent shutdown).
    pub async fn drain(&self) {
        use std::sync::atomic::Ordering;
        self.closed.store(true, Ordering::Release);
        // A fill in flight finishes (and releases what it made) first.
        for _ in 0..200 {
            if !self.filling.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let all: Vec<TaskNet> = self.ready.lock().unwrap().drain(..).collect();
        for n in all {
            if let Some(id) = net_id(&n) {
                teardown(&self.cfg, &id).await;
            }
        }
    }
}

/// Releases pool namespaces left by an earlier run that no task uses (`in_use`: ids from the
/// tasks' `net.json`).
pub async fn sweep_pool(cfg: &NetConfig, in_use: &std::collections::HashSet<String>) {
    let Ok(rd) = std::fs::read_dir(&cfg.netns_dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(POOL_PREFIX) && !in_use.contains(&name) {
            teardown(cfg, &name).await;
        }
    }
}

/// Detaches and removes the task's namespace, releasing its address.
pub async fn teardown(cfg: &NetConfig, task_id: &str) {
    let netns = cfg.netns_dir.join(task_id);
    if let Err(e) = cni(cfg, "DEL", task_id, &netns).await {
        tracing::warn!(task = task_id, "{e}");
    }
    remove_netns(&netns);
}

/// The two packet filter tables the isolation rules live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `iptables`.
    V4,
    /// `ip6tables`.
    V6,
}

impl Family {
    fn command(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

async fn iptables(family: Family, args: &[&str]) -> bool {
    tokio::process::Command::new(family.command())
        .args(["-w", "5"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// The host isolation rules for `cfg`'s bridge (each tagged with comment `berth:<bridge>`), in
/// insertion order (each goes to the top of its chain, so the ACCEPTs end above the DROPs):
/// - IPv4: from the bridge to the host only replies and TCP to `<gateway>:<metadata port>`;
///   nothing from the bridge is forwarded to other interfaces;
/// - IPv6: nothing from the bridge to the host, nothing forwarded.
pub fn isolation_rules(cfg: &NetConfig) -> Vec<(Family, Vec<String>)> {
    let tag = format!("berth:{}", cfg.bridge);
    let b = cfg.bridge.clone();
    let port = cfg.metadata_port.to_string();
    let gw = gateway_of(&cfg.subnet)
        .map(|g| g.to_string())
        .unwrap_or_else(|| "255.255.255.255".into());
    let v = |a: &[&str]| {
        let mut r: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        r.splice(
            r.len() - 2..r.len() - 2,
            ["-m", "comment", "--comment", &tag].map(String::from),
        );
        r
    };
    vec![
        (Family::V4, v(&["INPUT", "-i", &b, "-j", "DROP"])),
        (
            Family::V4,
            v(&[
                "INPUT", "-i", &b, "-d", &gw, "-p", "tcp", "--dport", &port, "-j", "ACCEPT",
            ]),
        ),
        (
            Family::V4,
            v(&[
                "INPUT",
                "-i",
                &b,
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ]),
        ),
        (
            Family::V4,
            v(&["FORWARD", "-i", &b, "!", "-o", &b, "-j", "DROP"]),
        ),
        (Family::V6, v(&["INPUT", "-i", &b, "-j", "DROP"])),
        (Family::V6, v(&["FORWARD", "-i", &b, "-j", "DROP"])),
    ]
}

/// Installs the isolation rules once (each inserted at the top of its chain unless present).
/// They stay after the agent ends (its tasks keep running); `berth` test harnesses and
/// operators remove them by their comment `berth:<bridge>`.
pub async fn install_isolation(cfg: &NetConfig) {
    // A bridge left by an earlier run (its tasks are re-adopted) loses IPv6 now too.
    if Path::new("/sys/class/net").join(&cfg.bridge).exists() {
        if let Err(e) = disable_ipv6(&cfg.bridge) {
            tracing::warn!("cannot disable IPv6 on bridge {}: {e}", cfg.bridge);
        }
    }
    for (family, r) in isolation_rules(cfg) {
        let (chain, rest) = r.split_first().expect("chain");
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        let mut check = vec!["-C", chain.as_str()];
        check.extend(&rest);
        if iptables(family, &check).await {
            continue;
        }
        if family == Family::V6 && !ipv6_present() {
            continue;
        }
        let mut ins = vec!["-I", chain.as_str()];
        ins.extend(&rest);
        if !iptables(family, &ins).await {
            tracing::warn!("cannot install {} rule {r:?}", family.command());
        }
    }
}

/// Publishes `127.0.0.1:<host_port>` -> `<ip>:<container_port>` (TCP) until the returned
/// handle is aborted (UDP: [`publish_udp`]). Fails when the host port is taken; the caller
/// goes on without it (the task still answers on `<ip>:<container_port>`).
pub async fn publish(
    host_port: u16,
    ip: Ipv4Addr,
    container_port: u16,
) -> Result<tokio::task::JoinHandle<()>, AgentError> {
    let l = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, host_port))
        .await
        .map_err(|e| {
            AgentError::Runtime(format!("cannot publish port 127.0.0.1:{host_port}: {e}"))
        })?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = inbound.set_nodelay(true);
                if let Ok(mut out) = tokio::net::TcpStream::connect((ip, container_port)).await {
                    let _ = out.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    }))
}

/// How long a UDP relay flow (one client address) lives without traffic.
pub const UDP_FLOW_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Publishes UDP `127.0.0.1:<host_port>` -> `<ip>:<container_port>` until the returned handle
/// is aborted. Each client address gets its own socket towards the task, so the task's replies
/// go back to that client; a flow ends after [`UDP_FLOW_IDLE`] without traffic.
pub async fn publish_udp(
    host_port: u16,
    ip: Ipv4Addr,
    container_port: u16,
) -> Result<tokio::task::JoinHandle<()>, AgentError> {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::Arc;
    let front = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, host_port))
        .await
        .map_err(|e| {
            AgentError::Runtime(format!(
                "cannot publish port 127.0.0.1:{host_port}/udp: {e}"
            ))
        })?;
    let front = Arc::new(front);
    Ok(tokio::spawn(async move {
        let flows: Arc<std::sync::Mutex<HashMap<SocketAddr, Arc<tokio::net::UdpSocket>>>> =
            Arc::default();
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, client)) = front.recv_from(&mut buf).await else {
                continue;
            };
            let existing = flows.lock().unwrap().get(&client).cloned();
            let back = match existing {
                Some(b) => b,
                None => {
                    let Ok(b) = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await
                    else {
                        continue;
                    };
                    if b.connect((ip, container_port)).await.is_err() {
                        continue;
                    }
                    let b = Arc::new(b);
                    flows.lock().unwrap().insert(client, b.clone());
                    let (front, flows, b2) = (front.clone(), flows.clone(), b.clone());
                    tokio::spawn(async move {
                        let mut rbuf = vec![0u8; 65536];
                        // Idle, or the task refused (ICMP port unreachable): the flow ends;
                        // the next datagram from the client opens a new one.
                        while let Ok(Ok(m)) =
                            tokio::time::timeout(UDP_FLOW_IDLE, b2.recv(&mut rbuf)).await
                        {
                            let _ = front.send_to(&rbuf[..m], client).await;
                        }
                        flows.lock().unwrap().remove(&client);
                    });
                    b
                }
            };
            let _ = back.send(&buf[..n]).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            gateway_of("10.88.0.0/16"),
            Some(Ipv4Addr::new(10, 88, 0, 1))
        );
        assert_eq!(
            gateway_of("10.88.3.7/24"),
            Some(Ipv4Addr::new(10, 88, 3, 1))
        );
        assert_eq!(gateway_of("10.88.0.0/31"), None);
        assert_eq!(gateway_of("x"), None);
        let n = TaskNet {
            netns: "/n".into(),
            ip: Ipv4Addr::new(10, 88, 1, 5),
            prefix: 16,
            gateway: Ipv4Addr::new(10, 88, 0, 1),
            mac: "aa".into(),
        };
        assert_eq!(n.subnet_cidr(), "10.88.0.0/16");
        assert_eq!(
            n.dns_name("us-east-1"),
            "ip-10-88-1-5.us-east-1.compute.internal"
        );
    }

    #[test]
    fn cni_result() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"b","mac":"m0"},{"name":"veth","mac":"m1"},
            {"name":"eth0","mac":"02:ee","sandbox":"/n"}],
            "ips":[{"interface":2,"address":"10.233.0.2/24","gateway":"10.233.0.1"}]}"#,
        )
        .unwrap();
        let n = parse_result(&v, Path::new("/n")).unwrap();
        assert_eq!(n.ip, Ipv4Addr::new(10, 233, 0, 2));
        assert_eq!(n.prefix, 24);
        assert_eq!(n.gateway, Ipv4Addr::new(10, 233, 0, 1));
        assert_eq!(n.mac, "02:ee");
        assert!(parse_result(&serde_json::json!({}), Path::new("/n")).is_err());
        let c = cni_config(&NetConfig {
            bridge: "berth0".into(),
            subnet: "10.88.0.0/16".into(),
            cni_path: "/usr/lib/cni".into(),
            ipam_dir: "/d".into(),
            netns_dir: "/n".into(),
            metadata_port: 80,
        });
        assert_eq!(c["ipam"]["ranges"][0][0]["subnet"], "10.88.0.0/16");
        assert_eq!(c["bridge"], "berth0");
    }
}
