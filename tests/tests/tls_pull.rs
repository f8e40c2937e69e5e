//! Images from registries other than berth's own are pulled over HTTPS with the registry's
//! token auth: a TLS registry (tests/registry_tls.py, serving the test image with a Bearer
//! challenge whose realm is its own /token) on loopback, with a CA made here by openssl.
//!
//! The rule under test: loopback registries are tried over HTTPS first (the certificate is
//! verified against the system store and `--registry-ca`; a certificate error is reported,
//! never downgraded) and fall back to plain HTTP only when the server does not speak TLS. Any
//! other registry is HTTPS only unless listed with `--insecure-registry HOST[:PORT]`; the
//! plain-HTTP case therefore runs the registry on the gateway address of a test server's task
//! bridge, a non-loopback address of this host that the test server creates.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::{fargate_taskdef, repo_root, temp_dir, test_image, Server};
use serde_json::{json, Value};

/// A test CA and a server certificate for 127.0.0.1 and localhost, in a temp dir.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new() -> Certs {
        let dir = temp_dir("tls");
        let ossl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=berth test CA",
        ]);
        ossl(&a);
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend([
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=localhost",
        ]);
        ossl(&a);
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        ossl(&[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        Certs { dir }
    }

    fn ca(&self) -> String {
        self.dir.join("ca.pem").to_string_lossy().into_owned()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// tests/registry_tls.py serving the test image as `busybox`, stopped on drop.
struct Registry {
    child: Child,
    port: u16,
    log: PathBuf,
    dir: PathBuf,
}

impl Registry {
    /// TLS with `certs`, or plain HTTP; `user` makes /token require Basic credentials.
    fn start(bind: &str, certs: Option<&Certs>, user: Option<(&str, &str)>) -> Registry {
        Self::start_args(bind, certs, user, &[])
    }

    fn start_args(
        bind: &str,
        certs: Option<&Certs>,
        user: Option<(&str, &str)>,
        extra: &[&str],
    ) -> Registry {
        let dir = temp_dir("reg");
        let log = dir.join("requests.log");
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("tests/registry_tls.py"))
            .arg("--layout")
            .arg(test_image())
            .args(["--bind", bind, "--log"])
            .arg(&log);
        if let Some(c) = certs {
            cmd.arg("--cert")
                .arg(c.dir.join("srv.pem"))
                .arg("--key")
                .arg(c.dir.join("srv.key"));
        }
        if let Some((u, p)) = user {
            cmd.args(["--user", u, "--password", p]);
        }
        cmd.args(extra);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("registry_tls.py did not start: {line:?}"));
        Registry {
            child,
            port,
            log,
            dir,
        }
    }

    fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Registers a one-container FARGATE task definition for `image` and runs it in cluster
/// `demo`; returns the stopped task.
fn run_to_stop(s: &Server, family: &str, image: &str, extra: Value) -> Value {
    let _ = s.aws(&["ecs", "create-cluster", "--cluster-name", "demo"]);
    let mut c = json!({"image": image, "command": ["sh", "-c", "exit 0"]});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    let td = s.register(&fargate_taskdef(family, "unused", c));
    let arn = s.run_task("demo", &td, None);
    s.wait_status("demo", &arn, "STOPPED", Duration::from_secs(90))
}

fn reason(t: &Value) -> &str {
    let r = t["stoppedReason"].as_str().unwrap_or("");
    eprintln!("stoppedReason: {r}");
    r
}

#[test]
fn tls_registry_with_bearer_tokens_runs_with_registry_ca() {
    let certs = Certs::new();
    let reg = Registry::start("127.0.0.1", Some(&certs), None);
    let s = Server::start_with(&["--registry-ca", &certs.ca()]);
    let image = format!("127.0.0.1:{}/busybox:1", reg.port);
    let t = run_to_stop(&s, "tls", &image, json!({}));
    assert_eq!(
        t["stopCode"],
        "EssentialContainerExited",
        "{t}\n{}",
        s.log()
    );
    assert_eq!(t["containers"][0]["exitCode"], 0, "{t}");
    let log = reg.requests();
    // Everything went over TLS with a token: one token for the whole pull (cached), asked
    // for with the registry's scope and service; every image request carried it.
    assert_eq!(
        log.matches("GET /token?").count(),
        1,
        "one token per (registry, scope):\n{log}"
    );
    assert!(
        log.contains("GET /token?service=test-registry&scope=repository%3Abusybox%3Apull"),
        "{log}"
    );
    for l in log.lines().filter(|l| l.contains("/blobs/")) {
        assert!(l.ends_with("bearer-ok"), "{l}\n{log}");
    }
    assert!(log.contains("/v2/busybox/manifests/1 bearer-ok"), "{log}");
    assert!(!log.contains("TLS-FAIL"), "{log}");

    // repositoryCredentials name a Secrets Manager secret, which berth does not have yet.
    let t = run_to_stop(
        &s,
        "tls-creds",
        &image,
        json!({"repositoryCredentials": {
            "credentialsParameter": "arn:aws:secretsmanager:us-east-1:000000000000:secret:reg-AbCdEf"
        }}),
    );
    assert_eq!(t["stopCode"], "TaskFailedToStart", "{t}");
    assert!(
        reason(&t)
            .starts_with("ResourceInitializationError: unable to pull secrets or registry auth: ")
            && reason(&t).contains("Secrets Manager is not available in berth yet")
            && reason(&t)
                .contains("asm fetching secret from the service for arn:aws:secretsmanager:us-east-1:000000000000:secret:reg-AbCdEf: "),
        "{t}"
    );

    // A registry whose challenge names its own scope (as public ECR's `aws`): the token is
    // fetched once and carried by every later request of the pull (one 401 in all).
    let ecr_like = Registry::start_args(
        "127.0.0.1",
        Some(&certs),
        None,
        &["--challenge-scope", "aws"],
    );
    let image2 = format!("127.0.0.1:{}/busybox:1", ecr_like.port);
    // A fresh server, so that the pull asks for the config and layer blobs too.
    let s2 = Server::start_with(&["--registry-ca", &certs.ca()]);
    let t = run_to_stop(&s2, "tls-scope", &image2, json!({}));
    assert_eq!(t["containers"][0]["exitCode"], 0, "{t}\n{}", s2.log());
    let log = ecr_like.requests();
    assert!(
        log.contains("GET /token?service=test-registry&scope=aws "),
        "{log}"
    );
    assert_eq!(log.matches("GET /token?").count(), 1, "{log}");
    assert_eq!(
        log.matches("/v2/busybox/manifests/1 none").count(),
        1,
        "{log}"
    );
    assert!(log.matches("/v2/busybox/blobs/").count() >= 2, "{log}");
    for l in log.lines().filter(|l| l.contains("/blobs/")) {
        assert!(l.ends_with("bearer-ok"), "{l}\n{log}");
    }
    drop(s2);

    // A token endpoint that refuses anonymous requests: the pull fails saying so.
    let locked = Registry::start("127.0.0.1", Some(&certs), Some(("u", "p")));
    let image = format!("127.0.0.1:{}/busybox:1", locked.port);
    let t = run_to_stop(&s, "tls-locked", &image, json!({}));
    assert_eq!(t["stopCode"], "TaskFailedToStart", "{t}");
    let want = format!(
        "CannotPullContainerError: pull image manifest has been retried 1 time(s): failed to resolve ref {image}: {image}: failed to authorize: failed to fetch anonymous token: unexpected status from GET request to https://127.0.0.1:{}/token?",
        locked.port
    );
    assert!(reason(&t).starts_with(&want), "{t}\nwant {want}");
    assert!(reason(&t).ends_with("401 Unauthorized"), "{t}");
}

#[test]
fn tls_registry_without_its_ca_fails_on_the_certificate_and_is_not_downgraded() {
    let certs = Certs::new();
    let reg = Registry::start("127.0.0.1", Some(&certs), None);
    let s = Server::start();
    let image = format!("127.0.0.1:{}/busybox:1", reg.port);
    let t = run_to_stop(&s, "tls-noca", &image, json!({}));
    assert_eq!(t["stopCode"], "TaskFailedToStart", "{t}");
    let r = reason(&t);
    assert!(
        r.starts_with(&format!(
            "CannotPullContainerError: pull image manifest has been retried 1 time(s): failed to resolve ref {image}: "
        )),
        "{t}"
    );
    assert!(
        r.contains(&format!("Get \"https://127.0.0.1:{}/v2/\"", reg.port))
            && r.contains("certificate")
            && r.contains("UnknownIssuer")
            && r.contains("--registry-ca"),
        "{t}"
    );
    // The agent never retried over plain HTTP (the registry would have logged it).
    let log = reg.requests();
    assert!(!log.contains("HTTP_REQUEST"), "{log}");
    assert!(!log.contains("GET /v2/busybox"), "{log}");
}

/// The gateway address of `s`'s task bridge, once the bridge has it (the agent creates the
/// bridge for its warm pool of task namespaces at start).
fn bridge_address(s: &Server) -> String {
    let subnet = s.task_subnet();
    let gw = format!("{}.1", subnet.rsplit_once('.').unwrap().0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("ip")
            .args(["-4", "-o", "addr", "show", "dev", &s.bridge()])
            .output()
            .expect("ip");
        if String::from_utf8_lossy(&out.stdout).contains(&format!("inet {gw}/")) {
            return gw;
        }
        assert!(
            Instant::now() < deadline,
            "bridge {} never got {gw}:\n{}",
            s.bridge(),
            s.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn plain_http_registry_is_refused_unless_listed_insecure() {
    // A registry on a non-loopback address of this host (the first server's bridge).
    let a = Server::start();
    let gw = bridge_address(&a);
    let reg = Registry::start(&gw, None, None);
    let host = format!("{gw}:{}", reg.port);
    let image = format!("{host}/busybox:1");

    let t = run_to_stop(&a, "plain", &image, json!({}));
    assert_eq!(t["stopCode"], "TaskFailedToStart", "{t}");
    let r = reason(&t);
    assert!(
        r.starts_with(&format!(
            "CannotPullContainerError: pull image manifest has been retried 1 time(s): failed to resolve ref {image}: "
        )) && r.contains("server gave HTTP response to HTTPS client")
            && r.contains(&format!("--insecure-registry {host}")),
        "{t}"
    );
    // Nothing was asked over plain HTTP: the registry only saw TLS handshakes.
    let log = reg.requests();
    assert!(log.contains("PLAIN-GOT-TLS"), "{log}");
    assert!(!log.contains("GET /"), "{log}");

    // Listed, the same registry is pulled from over HTTP, its token realm (plain HTTP on a
    // listed host) included.
    let b = Server::start_with(&["--insecure-registry", &host]);
    let t = run_to_stop(&b, "plain-ok", &image, json!({}));
    assert_eq!(
        t["stopCode"],
        "EssentialContainerExited",
        "{t}\n{}",
        b.log()
    );
    assert_eq!(t["containers"][0]["exitCode"], 0, "{t}");
    let log = reg.requests();
    assert!(
        log.contains("GET /v2/busybox/manifests/1 bearer-ok"),
        "{log}"
    );
    assert_eq!(log.matches("GET /token?").count(), 1, "{log}");
}

#[test]
fn bad_registry_flags_stop_the_server_at_start() {
    let dir = temp_dir("badflags");
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    for (flag, value, why) in [
        (
            "--registry-ca",
            junk.to_string_lossy().into_owned(),
            "no PEM certificate",
        ),
        (
            "--registry-ca",
            dir.join("missing.pem").to_string_lossy().into_owned(),
            "No such file",
        ),
        (
            "--insecure-registry",
            "http://reg.lan:5000".to_string(),
            "expected HOST or HOST:PORT",
        ),
    ] {
        // `timeout`: a server that accepted the flag would keep running.
        let out = Command::new("timeout")
            .arg("20")
            .arg(berth_bin())
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .args([flag, &value])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value}: {err}");
        assert!(
            err.contains(&format!("{flag} {value}")) && err.contains(why),
            "{flag} {value}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn berth_bin() -> PathBuf {
    std::env::var_os("BERTH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug/berth"))
}

#[test]
fn loopback_plain_http_registry_still_works_after_one_https_try() {
    let reg = Registry::start("127.0.0.1", None, None);
    let s = Server::start();
    let image = format!("localhost:{}/busybox:1", reg.port);
    for family in ["loop-1", "loop-2"] {
        let t = run_to_stop(&s, family, &image, json!({}));
        assert_eq!(
            t["stopCode"],
            "EssentialContainerExited",
            "{t}\n{}",
            s.log()
        );
        assert_eq!(t["containers"][0]["exitCode"], 0, "{t}");
    }
    let log = reg.requests();
    // HTTPS was tried once (the answer is remembered), then everything went over HTTP with
    // a token from the plain-HTTP loopback realm.
    assert_eq!(log.matches("PLAIN-GOT-TLS").count(), 1, "{log}");
    assert_eq!(
        log.matches("GET /v2/busybox/manifests/1 bearer-ok").count(),
        2,
        "{log}"
    );
    assert_eq!(log.matches("GET /token?").count(), 1, "{log}");
}
