//! Image scanning, black-box: a `berth server --scan-db DIR` process, an image built here whose
//! layers hold a dpkg status file (and an apk database a later layer whites out), pushed with
//! skopeo, scanned with the AWS CLI (`start-image-scan`, `wait image-scan-complete`,
//! `describe-image-scan-findings`, `describe-images`) against OSV files this test writes.
//! Also: `scanOnPush`, an image without a package database (UNSUPPORTED_IMAGE), and a server
//! without a database (FAILED, saying so; the waiter fails).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::{http, repo_root, temp_dir, test_image};
use serde_json::{json, Value};

/// A `berth server --no-agent` with optional `--scan-db` (the shared harness has no way to pass
/// extra flags).
struct ScanServer {
    port: u16,
    data_dir: PathBuf,
    child: Child,
}

impl ScanServer {
    fn start(scan_db: Option<&Path>) -> ScanServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data_dir = temp_dir("scan");
        let bin = std::env::var_os("BERTH_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/debug/berth"));
        let mut cmd = Command::new(bin);
        cmd.args([
            "server",
            "--no-agent",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--data-dir")
        .arg(&data_dir);
        if let Some(db) = scan_db {
            cmd.arg("--scan-db").arg(db);
        }
        let log = std::fs::File::create(data_dir.join("server.log")).unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting berth server (build it first: cargo build -p berth)");
        let s = ScanServer {
            port,
            data_dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if http(port, "GET", "/v2/", &[], b"").is_ok_and(|(c, _, _)| c == 401) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("berth server did not answer:\n{}", s.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default()
    }

    fn aws_cmd(&self, args: &[&str]) -> std::process::Output {
        let key = berth_iam::Credentials::read_primary(&self.data_dir)
            .unwrap()
            .expect("the server's credentials.json");
        Command::new("aws")
            .arg("--endpoint-url")
            .arg(format!("http://127.0.0.1:{}", self.port))
            .args(["--region", "us-east-1", "--output", "json"])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &key.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &key.secret_access_key)
            .env("AWS_MAX_ATTEMPTS", "1")
            .env("AWS_PAGER", "")
            .output()
            .expect("running aws")
    }

    fn aws(&self, args: &[&str]) -> Result<Value, String> {
        let out = self.aws_cmd(args);
        if out.status.success() {
            let s = String::from_utf8_lossy(&out.stdout);
            Ok(serde_json::from_str(&s).unwrap_or(Value::Null))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn aws_ok(&self, args: &[&str]) -> Value {
        self.aws(args)
            .unwrap_or_else(|e| panic!("aws {args:?} failed: {e}\n{}", self.log()))
    }

    fn push(&self, layout: &str, repo: &str, tag: &str) {
        let login = self.aws_cmd(&["ecr", "get-login-password"]);
        assert!(login.status.success(), "{login:?}");
        let password = String::from_utf8_lossy(&login.stdout).trim().to_string();
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(["--dest-creds", &format!("AWS:{password}")])
            .arg(format!("oci:{layout}"))
            .arg(format!("docker://127.0.0.1:{}/{repo}:{tag}", self.port))
            .output()
            .expect("running skopeo");
        assert!(
            out.status.success(),
            "skopeo push failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    fn findings(&self, repo: &str, tag: &str) -> Value {
        self.aws_ok(&[
            "ecr",
            "describe-image-scan-findings",
            "--repository-name",
            repo,
            "--image-id",
            &format!("imageTag={tag}"),
            "--no-paginate",
        ])
    }

    /// Polls DescribeImageScanFindings until the status is not IN_PROGRESS.
    fn settle(&self, repo: &str, tag: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.findings(repo, tag);
            if v["imageScanStatus"]["status"] != "IN_PROGRESS" {
                return v;
            }
            assert!(Instant::now() < deadline, "scan never finished: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ScanServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

const STATUS: &str = "Package: libssl3
Status: install ok installed
Priority: optional
Architecture: amd64
Source: openssl
Version: 3.0.11-1~deb12u2
Description: Secure Sockets Layer toolkit - shared libraries

Package: zlib1g
Status: install ok installed
Architecture: amd64
Source: zlib (1:1.2.13.dfsg-1)
Version: 1:1.2.13.dfsg-1+b1
Description: compression library - runtime

Package: removed-pkg
Status: deinstall ok config-files
Version: 1.0-1
Description: removed, only its config files remain

Package: bash
Status: install ok installed
Version: 5.2.15-2+b7
Description: GNU Bourne Again SHell
";

/// Writes the OSV database: two records that affect the image, three that do not.
fn write_db(dir: &Path) {
    let records = [
        // Affects openssl (source of libssl3) in Debian 12 before 3.0.13-1~deb12u1.
        json!({"id": "DEBIAN-CVE-2024-0727", "aliases": ["CVE-2024-0727"],
               "summary": "openssl: denial of service via null dereference",
               "details": "Processing a maliciously formatted PKCS12 file may lead OpenSSL to crash.",
               "database_specific": {"severity": "high"},
               "references": [{"type": "ADVISORY", "url": "https://security-tracker.debian.org/tracker/CVE-2024-0727"}],
               "affected": [{"package": {"ecosystem": "Debian:12", "name": "openssl"},
                             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.0.13-1~deb12u1"}]}]}]}),
        // Affects zlib (source version 1:1.2.13.dfsg-1 < 1:1.2.13.dfsg-1+deb12u1); CVSS 9.8.
        json!({"id": "DEBIAN-CVE-2023-45853", "aliases": ["CVE-2023-45853"],
               "details": "MiniZip in zlib has an integer overflow.",
               "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
               "affected": [{"package": {"ecosystem": "Debian:12", "name": "zlib"},
                             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1:1.2.13.dfsg-1+deb12u1"}]}]}]}),
        // Fixed before the installed openssl (3.0.9-1 < 3.0.11-1~deb12u2).
        json!({"id": "DEBIAN-CVE-2023-0001", "aliases": ["CVE-2023-0001"],
               "affected": [{"package": {"ecosystem": "Debian:12", "name": "openssl"},
                             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.0.9-1"}]}]}]}),
        // Another Debian release only.
        json!({"id": "DEBIAN-CVE-2023-0002", "aliases": ["CVE-2023-0002"],
               "affected": [{"package": {"ecosystem": "Debian:11", "name": "bash"},
                             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}]}),
        // The apk database that a later layer whites out.
        json!({"id": "ALPINE-CVE-2023-0003", "aliases": ["CVE-2023-0003"],
               "database_specific": {"severity": "critical"},
               "affected": [{"package": {"ecosystem": "Alpine:v3.19", "name": "busybox"},
                             "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}]}),
        // And one removed package.
        json!({"id": "DEBIAN-CVE-2023-0004", "affected": [{"package": {"ecosystem": "Debian:12", "name": "removed-pkg"},
               "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}]}]}),
    ];
    std::fs::create_dir_all(dir.join("debian")).unwrap();
    for r in records {
        let id = r["id"].as_str().unwrap();
        let sub = if id.starts_with("DEBIAN") {
            "debian"
        } else {
            ""
        };
        std::fs::write(dir.join(sub).join(format!("{id}.json")), r.to_string()).unwrap();
    }
    std::fs::write(dir.join("README.txt"), "not json, ignored").unwrap();
}

/// Builds the scanned image: layer 1 has os-release, the dpkg status and an apk database;
/// layer 2 whites the apk database out.
fn build_image(dir: &Path) -> String {
    let out = dir.join("layout");
    let spec = json!({
        "out": out,
        "images": [{"tag": "1", "layers": [
            {"dirs": ["etc", "var", "var/lib", "var/lib/dpkg", "lib", "lib/apk", "lib/apk/db"],
             "files": {"etc/os-release": "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
                       "var/lib/dpkg/status": STATUS,
                       "lib/apk/db/installed": "P:busybox\nV:1.36.1-r15\no:busybox\n"}},
            {"whiteouts": ["lib/apk/db/installed"], "files": {"etc/motd": "hello\n"}}
        ]}]
    });
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let st = Command::new("python3")
        .arg(repo_root().join("bench/oci-layout.py"))
        .arg(&spec_path)
        .status()
        .unwrap();
    assert!(st.success());
    format!("{}:1", out.display())
}

fn attr(f: &Value, k: &str) -> String {
    f["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == k)
        .map(|a| a["value"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn scan_finds_vulnerable_dpkg_packages_from_an_osv_database() {
    let work = temp_dir("scan-work");
    let db = work.join("osv");
    write_db(&db);
    let image = build_image(&work);
    let s = ScanServer::start(Some(&db));
    s.aws_ok(&["ecr", "create-repository", "--repository-name", "scanned"]);
    s.push(&image, "scanned", "1");

    // Never scanned: ScanNotFoundException; DescribeImages has no scan status.
    let e = s
        .aws(&[
            "ecr",
            "describe-image-scan-findings",
            "--repository-name",
            "scanned",
            "--image-id",
            "imageTag=1",
        ])
        .unwrap_err();
    assert!(e.contains("ScanNotFoundException"), "{e}");
    let d = s.aws_ok(&["ecr", "describe-images", "--repository-name", "scanned"]);
    assert!(d["imageDetails"][0].get("imageScanStatus").is_none(), "{d}");

    let r = s.aws_ok(&[
        "ecr",
        "start-image-scan",
        "--repository-name",
        "scanned",
        "--image-id",
        "imageTag=1",
    ]);
    assert_eq!(r["repositoryName"], "scanned");
    assert_eq!(r["imageId"]["imageTag"], "1");
    assert!(r["imageId"]["imageDigest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(
        ["IN_PROGRESS", "COMPLETE"].contains(&r["imageScanStatus"]["status"].as_str().unwrap()),
        "{r}"
    );
    // The AWS CLI waiter (DescribeImageScanFindings until COMPLETE, fails on FAILED).
    let w = s.aws_cmd(&[
        "ecr",
        "wait",
        "image-scan-complete",
        "--repository-name",
        "scanned",
        "--image-id",
        "imageTag=1",
    ]);
    assert!(
        w.status.success(),
        "waiter: {}\n{}",
        String::from_utf8_lossy(&w.stderr),
        s.log()
    );

    let v = s.findings("scanned", "1");
    assert_eq!(v["imageScanStatus"]["status"], "COMPLETE", "{v}");
    let f = &v["imageScanFindings"];
    assert_eq!(
        f["findingSeverityCounts"],
        json!({"CRITICAL": 1, "HIGH": 1}),
        "{v}"
    );
    assert!(f["imageScanCompletedAt"].as_f64().is_some());
    assert!(f["vulnerabilitySourceUpdatedAt"].as_f64().is_some());
    let list = f["findings"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{v}");
    // Most severe first.
    assert_eq!(list[0]["name"], "CVE-2023-45853");
    assert_eq!(list[0]["severity"], "CRITICAL");
    assert_eq!(attr(&list[0], "package_name"), "zlib1g");
    assert_eq!(attr(&list[0], "package_version"), "1:1.2.13.dfsg-1+b1");
    assert_eq!(attr(&list[0], "source_package"), "zlib");
    assert_eq!(
        attr(&list[0], "fixed_in_version"),
        "1:1.2.13.dfsg-1+deb12u1"
    );
    assert_eq!(attr(&list[0], "CVSS3_SCORE"), "9.8");
    assert_eq!(list[1]["name"], "CVE-2024-0727");
    assert_eq!(list[1]["severity"], "HIGH");
    assert_eq!(
        list[1]["uri"],
        "https://security-tracker.debian.org/tracker/CVE-2024-0727"
    );
    assert!(list[1]["description"].as_str().unwrap().contains("PKCS12"));
    assert_eq!(attr(&list[1], "package_name"), "libssl3");
    assert_eq!(attr(&list[1], "package_manager"), "dpkg");

    // Pagination of findings.
    let p = s.aws_ok(&[
        "ecr",
        "describe-image-scan-findings",
        "--repository-name",
        "scanned",
        "--image-id",
        "imageTag=1",
        "--max-results",
        "1",
        "--no-paginate",
    ]);
    assert_eq!(
        p["imageScanFindings"]["findings"].as_array().unwrap().len(),
        1
    );
    assert!(p["nextToken"].as_str().is_some(), "{p}");

    // DescribeImages carries the status and the summary.
    let d = s.aws_ok(&["ecr", "describe-images", "--repository-name", "scanned"]);
    let img = &d["imageDetails"][0];
    assert_eq!(img["imageScanStatus"]["status"], "COMPLETE");
    assert_eq!(
        img["imageScanFindingsSummary"]["findingSeverityCounts"],
        json!({"CRITICAL": 1, "HIGH": 1})
    );

    // scanOnPush: the push alone starts the scan.
    s.aws_ok(&[
        "ecr",
        "create-repository",
        "--repository-name",
        "onpush",
        "--image-scanning-configuration",
        "scanOnPush=true",
    ]);
    s.push(&image, "onpush", "1");
    let v = s.settle("onpush", "1");
    assert_eq!(v["imageScanStatus"]["status"], "COMPLETE", "{v}");
    assert_eq!(
        v["imageScanFindings"]["findings"].as_array().unwrap().len(),
        2
    );

    // No package database (the busybox test image): UNSUPPORTED_IMAGE, never a clean COMPLETE.
    s.aws_ok(&["ecr", "create-repository", "--repository-name", "plain"]);
    s.push(&format!("{}:1", test_image().display()), "plain", "1");
    s.aws_ok(&[
        "ecr",
        "start-image-scan",
        "--repository-name",
        "plain",
        "--image-id",
        "imageTag=1",
    ]);
    let v = s.settle("plain", "1");
    assert_eq!(v["imageScanStatus"]["status"], "UNSUPPORTED_IMAGE", "{v}");
    assert!(v["imageScanStatus"]["description"]
        .as_str()
        .unwrap()
        .contains("dpkg"));
    assert!(v.get("imageScanFindings").is_none());

    // Unknown image.
    let e = s
        .aws(&[
            "ecr",
            "start-image-scan",
            "--repository-name",
            "scanned",
            "--image-id",
            "imageTag=nope",
        ])
        .unwrap_err();
    assert!(e.contains("ImageNotFoundException"), "{e}");

    // Deleting the image deletes its scan; a re-push is unscanned.
    s.aws_ok(&[
        "ecr",
        "batch-delete-image",
        "--repository-name",
        "scanned",
        "--image-ids",
        "imageTag=1",
    ]);
    s.push(&image, "scanned", "1");
    let e = s
        .aws(&[
            "ecr",
            "describe-image-scan-findings",
            "--repository-name",
            "scanned",
            "--image-id",
            "imageTag=1",
        ])
        .unwrap_err();
    assert!(e.contains("ScanNotFoundException"), "{e}");
    drop(s);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn without_a_database_the_scan_fails_and_says_why() {
    let work = temp_dir("scan-nodb");
    let image = build_image(&work);
    let s = ScanServer::start(None);
    s.aws_ok(&[
        "ecr",
        "create-repository",
        "--repository-name",
        "app",
        "--image-scanning-configuration",
        "scanOnPush=true",
    ]);
    s.push(&image, "app", "1");
    // scanOnPush already recorded the failure.
    let v = s.findings("app", "1");
    assert_eq!(v["imageScanStatus"]["status"], "FAILED", "{v}");
    assert!(
        v["imageScanStatus"]["description"]
            .as_str()
            .unwrap()
            .contains("--scan-db"),
        "{v}"
    );
    assert!(v.get("imageScanFindings").is_none(), "{v}");
    let r = s.aws_ok(&[
        "ecr",
        "start-image-scan",
        "--repository-name",
        "app",
        "--image-id",
        "imageTag=1",
    ]);
    assert_eq!(r["imageScanStatus"]["status"], "FAILED", "{r}");
    let w = s.aws_cmd(&[
        "ecr",
        "wait",
        "image-scan-complete",
        "--repository-name",
        "app",
        "--image-id",
        "imageTag=1",
    ]);
    assert!(!w.status.success());
    assert!(
        String::from_utf8_lossy(&w.stderr).contains("FAILED"),
        "{}",
        String::from_utf8_lossy(&w.stderr)
    );
    let d = s.aws_ok(&["ecr", "describe-images", "--repository-name", "app"]);
    assert_eq!(d["imageDetails"][0]["imageScanStatus"]["status"], "FAILED");
    assert!(d["imageDetails"][0]
        .get("imageScanFindingsSummary")
        .is_none());

    // Offline import of an osv.dev-style archive into the server's default database
    // (`<data-dir>/scan-db`): the running server scans with it, no restart.
    let records = work.join("records");
    write_db(&records);
    let zip = work.join("all.zip");
    let script = work.join("zip.py");
    std::fs::write(
        &script,
        "import sys, zipfile, pathlib\n\
         with zipfile.ZipFile(sys.argv[2], 'w') as z:\n\
         \x20   for p in pathlib.Path(sys.argv[1]).rglob('*.json'):\n\
         \x20       z.write(p, p.name)\n",
    )
    .unwrap();
    let st = Command::new("python3")
        .arg(&script)
        .arg(&records)
        .arg(&zip)
        .status()
        .unwrap();
    assert!(st.success());
    let bin = std::env::var_os("BERTH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug/berth"));
    let out = Command::new(bin)
        .args(["scan-db", "import"])
        .arg(&zip)
        .arg("--data-dir")
        .arg(&s.data_dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("imported 6 vulnerability records"), "{said}");
    s.aws_ok(&[
        "ecr",
        "start-image-scan",
        "--repository-name",
        "app",
        "--image-id",
        "imageTag=1",
    ]);
    let v = s.settle("app", "1");
    assert_eq!(v["imageScanStatus"]["status"], "COMPLETE", "{v}");
    assert!(
        !v["imageScanFindings"]["findings"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{v}"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&work);
}
