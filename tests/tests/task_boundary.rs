//! The boundary between tasks and the host (issue 11 "host escapes", issue 12), black-box with
//! real crun: the shim's control socket is for root only; a task reaches neither host
//! listeners (IPv4 but the metadata endpoint, IPv6 at all) nor another task's metadata; tasks
//! of one service mapping the same port all run and each answers on its own address.
//!
//! Traffic goes only to 127.0.0.1, to this host's own addresses (delivered locally or dropped,
//! never forwarded) and to addresses of namespaces berth created.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_tests::{fargate_taskdef, task_id, Server};
use serde_json::{json, Value};

const NET: &str = "awsvpcConfiguration={subnets=[subnet-12345678]}";

fn setup(s: &Server) {
    s.push_test_image("busybox", "1");
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "edge"]);
}

fn logs(s: &Server, family: &str, arn: &str) -> Vec<String> {
    s.log_events(
        &format!("/ecs/{family}"),
        &format!("ecs/app/{}", task_id(arn)),
    )
}

fn task_ip(t: &Value) -> String {
    t["attachments"][0]["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "privateIPv4Address")
        .map(|d| d["value"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no privateIPv4Address: {t}"))
}

fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn gateway(s: &Server) -> String {
    let subnet = s.task_subnet();
    let (net, _) = subnet.split_once('/').unwrap();
    format!("{}.1", net.rsplit_once('.').unwrap().0)
}

/// Runs `argv` as user nobody (uid/gid 65534, no supplementary groups) with `setpriv`.
fn as_nobody(argv: &[&str]) -> String {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(argv)
        .output()
        .expect("setpriv (util-linux)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A process of another user cannot reach a task's shim: not by the socket file (under a 0700
/// directory), not by the abstract name shims used to listen on. The task keeps running (its
/// agent was not displaced) and stops on request.
#[test]
fn other_users_cannot_reach_a_tasks_shim() {
    let s = Server::start();
    setup(&s);
    let td = s.register(&fargate_taskdef(
        "held",
        "busybox",
        json!({"command": ["sh", "-c", "echo up; exec sleep 3600"], "stopTimeout": 1}),
    ));
    let arn = s.run_task("edge", &td, None);
    s.wait_status("edge", &arn, "RUNNING", Duration::from_secs(30));
    let id = task_id(&arn);
    let ctl = s.data_dir.join("agent/tasks").join(id).join("ctl");
    let sock = ctl.join("shim.sock");
    // The attack: connect, then ask the shim to run another bundle and kill the container.
    let script = r#"
import socket, sys
def attempt(label, addr):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(addr)
    except OSError as e:
        print(label, "refused", e.__class__.__name__)
        return
    try:
        s.sendall(b"start\t9\tberth-evil\t/tmp\nkill\t0\t9\n")
        data = s.recv(100)
        print(label, "connected", repr(data))
    except OSError as e:
        print(label, "connected-then", e.__class__.__name__)
attempt("path", sys.argv[1])
attempt("abstract", "\0berth-shim-" + sys.argv[2])
"#;
    let out = as_nobody(&["/usr/bin/python3", "-c", script, sock.to_str().unwrap(), id]);
    assert!(out.lines().any(|l| l.starts_with("path refused")), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("abstract refused")),
        "{out}"
    );
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let md = std::fs::metadata(&ctl).unwrap_or_else(|e| panic!("{}: {e}", ctl.display()));
    assert_eq!(md.permissions().mode() & 0o777, 0o700);
    let md = std::fs::symlink_metadata(&sock).unwrap();
    assert!(md.file_type().is_socket());
    assert_eq!(md.permissions().mode() & 0o777, 0o600);

    // Nothing was disturbed: the task still runs, and then stops on request.
    std::thread::sleep(Duration::from_secs(2));
    let t = s.describe_task("edge", &arn);
    assert_eq!(t["lastStatus"], "RUNNING", "{t}");
    s.aws_ok(&["ecs", "stop-task", "--cluster", "edge", "--task", &arn]);
    let t = s.wait_status("edge", &arn, "STOPPED", Duration::from_secs(30));
    assert_eq!(t["containers"][0]["exitCode"], 137, "{t}");
    assert_eq!(t["stopCode"], "UserInitiated", "{t}");
}

/// This host's addresses outside berth's bridges (`ip -o addr`), loopback left out.
fn host_addresses() -> Vec<IpAddr> {
    let out = Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (iface, addr) = (*f.get(1)?, *f.get(3)?);
            if iface == "lo" || iface.starts_with("bt") || iface.starts_with("veth") {
                return None;
            }
            addr.split('/').next()?.parse().ok()
        })
        .filter(|a: &IpAddr| !a.is_loopback())
        .collect()
}

/// The bridge's IPv6 link-local address as the kernel derives it from its MAC (EUI-64), whether
/// or not the bridge has it.
fn link_local_of(iface: &str) -> String {
    let mac = std::fs::read_to_string(format!("/sys/class/net/{iface}/address")).unwrap();
    let b: Vec<u8> = mac
        .trim()
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect();
    format!(
        "fe80::{:x}:{:x}:{:x}:{:x}",
        u16::from_be_bytes([b[0] ^ 2, b[1]]),
        u16::from_be_bytes([b[2], 0xff]),
        u16::from_be_bytes([0xfe, b[3]]),
        u16::from_be_bytes([b[4], b[5]])
    )
}

/// Accepts connections on `l` in the background, recording the peers.
fn record(l: TcpListener, seen: Arc<Mutex<Vec<SocketAddr>>>) {
    std::thread::spawn(move || {
        for c in l.incoming() {
            match c {
                Ok(c) => {
                    seen.lock().unwrap().push(c.peer_addr().unwrap());
                    let _ = (&c).write_all(b"host\n");
                }
                Err(_) => return,
            }
        }
    });
}

/// A task reaches no host listener: not on the gateway's address (but the metadata endpoint's
/// port), not on the host's other addresses (not even on the metadata port), not over IPv6
/// (the bridge's link-local address, the host's global ones, an IPv4-mapped gateway). And the
/// metadata endpoint tells task B nothing about task A.
#[test]
fn tasks_reach_no_host_listener_and_no_other_tasks_metadata() {
    let mport = free_port();
    let s = Server::start_with(&["--metadata-port", &mport.to_string()]);
    setup(&s);
    let seen: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
    // One dual-stack listener on every host address, and the metadata port on each host
    // address outside the bridge (the old rule accepted that port on any host address).
    let port = free_port();
    record(TcpListener::bind(("::", port)).unwrap(), seen.clone());
    let addrs = host_addresses();
    for a in &addrs {
        let l = match a {
            IpAddr::V6(v6) if v6.segments()[0] == 0xfe80 => continue,
            a => TcpListener::bind((*a, mport)),
        };
        record(
            l.unwrap_or_else(|e| panic!("bind {a}:{mport}: {e}")),
            seen.clone(),
        );
    }

    // Task A holds still; its id is what B asks the metadata endpoint about.
    let held = s.register(&fargate_taskdef(
        "held",
        "busybox",
        json!({"command": ["sh", "-c", "exec sleep 3600"], "stopTimeout": 1}),
    ));
    let a = s.run_task("edge", &held, None);
    let ta = s.wait_status("edge", &a, "RUNNING", Duration::from_secs(30));
    let a_ip = task_ip(&ta);

    let gw = gateway(&s);
    let ll = link_local_of(&s.bridge());
    let mut targets: Vec<(String, u16)> = vec![
        (gw.clone(), port),
        (format!("{ll}%eth0"), port),
        (format!("{ll}%eth0"), mport),
        (format!("::ffff:{gw}"), port),
    ];
    for a in &addrs {
        match a {
            IpAddr::V6(v6) if v6.segments()[0] == 0xfe80 => {
                targets.push((format!("{a}%eth0"), port))
            }
            _ => {
                targets.push((a.to_string(), port));
                targets.push((a.to_string(), mport));
            }
        }
    }
    // The one port that answers: the metadata endpoint (shows `nc` does reach what is open).
    let mut script = format!(
        "if nc -w 2 {gw} {mport} </dev/null >/dev/null 2>&1; then echo metadata-open; fi; "
    );
    for (h, p) in &targets {
        script.push_str(&format!(
            "if nc -w 2 {h} {p} </dev/null >/dev/null 2>&1; then echo open {h} {p}; else echo closed {h} {p}; fi; "
        ));
    }
    let a_id = task_id(&a);
    script.push_str(&format!(
        "wget -q -O- http://{gw}:{mport}/v4/{a_id}-0/task; echo other-task=$?; \
         wget -q -O- http://{gw}:{mport}/v4/{a_id}-0; echo other-container=$?; \
         wget -q -O- http://{gw}:{mport}/v4/{a_id}-0/task/stats; echo other-stats=$?; \
         wget -q -O- $ECS_CONTAINER_METADATA_URI_V4/task; echo; echo own-task=$?"
    ));
    let probe = s.register(&fargate_taskdef(
        "probe",
        "busybox",
        json!({"command": ["sh", "-c", script]}),
    ));
    let b = s.run_task("edge", &probe, None);
    let tb = s.wait_status("edge", &b, "STOPPED", Duration::from_secs(120));
    assert_eq!(tb["containers"][0]["exitCode"], 0, "{tb}");
    let out = logs(&s, "probe", &b);
    let peers = seen.lock().unwrap().clone();
    assert!(
        peers.is_empty(),
        "the task reached host listeners: {peers:?}\n{out:#?}"
    );
    for (h, p) in &targets {
        assert!(
            out.contains(&format!("closed {h} {p}")),
            "{h} port {p} open from a task: {out:#?}"
        );
    }
    assert!(out.contains(&"metadata-open".to_string()), "{out:#?}");
    // Its own metadata it reads (the endpoint works), A's it does not.
    assert!(out.contains(&"own-task=0".to_string()), "{out:#?}");
    assert!(
        out.iter()
            .any(|l| l.contains(b.as_str()) && l.contains("TaskARN")),
        "{out:#?}"
    );
    for k in ["other-task", "other-container", "other-stats"] {
        assert!(
            out.iter()
                .any(|l| l.starts_with(&format!("{k}=")) && *l != format!("{k}=0")),
            "{k}: {out:#?}"
        );
    }
    assert!(
        !out.iter().any(|l| l.contains(a_id) || l.contains(&a_ip)),
        "task B learnt about task A: {out:#?}"
    );
    s.aws_ok(&["ecs", "stop-task", "--cluster", "edge", "--task", &a]);
    s.wait_status("edge", &a, "STOPPED", Duration::from_secs(30));
}

/// GET `/` from `ip:port` (the task's own address), the body.
fn get(ip: &str, port: u16) -> std::io::Result<String> {
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut buf = String::new();
    c.read_to_string(&mut buf)?;
    Ok(buf)
}

/// Issue 12: three tasks of one service map the same port. All run (the host port goes to one
/// of them, the others go on without it), and each answers on its own address from the host,
/// over the bridge (never by the default route).
#[test]
fn a_service_of_three_tasks_mapping_one_port_is_stable_and_each_answers() {
    let s = Server::start();
    setup(&s);
    let port = free_port();
    let td = s.register(&fargate_taskdef(
        "web",
        "busybox",
        json!({
            "command": ["sh", "-c", format!(
                "mkdir -p /w; ifconfig eth0 > /w/index.html; exec httpd -f -p {port} -h /w")],
            "portMappings": [{"containerPort": port, "protocol": "tcp"}],
            "stopTimeout": 1
        }),
    ));
    s.aws_ok(&[
        "ecs",
        "create-service",
        "--cluster",
        "edge",
        "--service-name",
        "web",
        "--task-definition",
        &td,
        "--desired-count",
        "3",
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        NET,
    ]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let svc = loop {
        let v = s.aws_ok(&[
            "ecs",
            "describe-services",
            "--cluster",
            "edge",
            "--services",
            "web",
        ])["services"][0]
            .clone();
        if v["runningCount"] == 3
            && v["pendingCount"] == 0
            && v["deployments"][0]["rolloutState"] == "COMPLETED"
        {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the service never became stable: {v:#}\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(svc["deployments"].as_array().unwrap().len(), 1, "{svc}");
    let arns = s.aws_ok(&[
        "ecs",
        "list-tasks",
        "--cluster",
        "edge",
        "--service-name",
        "web",
    ]);
    let arns: Vec<String> = arns["taskArns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(arns.len(), 3, "{arns:?}");
    let mut bound = 0;
    for arn in &arns {
        let t = s.describe_task("edge", arn);
        assert_eq!(t["lastStatus"], "RUNNING", "{t}");
        let ip = task_ip(&t);
        // The route to the task is the bridge, not the default route.
        let r = Command::new("ip")
            .args(["-o", "route", "get", &ip])
            .output()
            .unwrap();
        let r = String::from_utf8_lossy(&r.stdout).to_string();
        assert!(
            r.contains(&format!(" dev {} ", s.bridge())) && !r.contains(" via "),
            "{ip}: {r}"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let body = loop {
            match get(&ip, port) {
                Ok(b) if b.starts_with("HTTP/1.") => break b,
                r if Instant::now() > deadline => panic!("{ip}:{port}: {r:?}"),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        assert!(body.contains(&format!("addr:{ip} ")), "{ip}: {body}");
        let b = t["containers"][0]["networkBindings"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for nb in &b {
            assert_eq!(nb["hostPort"], port, "{t}");
            assert_eq!(nb["bindIP"], "127.0.0.1", "{t}");
        }
        bound += b.len();
    }
    // The host port went to exactly one task, which answers there.
    assert_eq!(bound, 1);
    let (status, _, _) = berth_tests::http(port, "GET", "/", &[], b"").unwrap();
    assert_eq!(status, 200);
    assert!(s.log().contains("not published on the host"), "{}", s.log());
    s.aws_ok(&[
        "ecs",
        "delete-service",
        "--cluster",
        "edge",
        "--service",
        "web",
        "--force",
    ]);
}
