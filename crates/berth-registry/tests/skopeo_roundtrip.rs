//! Real-client check: push an OCI layout (a busybox image built here) with `skopeo copy` to the
//! registry served on a loopback port, pull it back, and compare digests. Skips (with a message)
//! when skopeo or /bin/busybox is missing.

use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use berth_core::arn::Scope;
use berth_registry::Registry;
use berth_store::SqliteStore;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// Writes `bytes` as a blob of the OCI layout at `dir`; returns its descriptor.
fn blob(dir: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let d = sha256(bytes);
    std::fs::write(dir.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
    json!({"mediaType": media_type, "digest": d, "size": bytes.len()})
}

/// An OCI image layout at `dir` with one image tagged `1`: a single uncompressed layer holding
/// /bin/busybox and /bin/sh -> busybox (gzip). Returns the manifest digest.
fn build_layout(dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    let tar = dir.join("layer.tar");
    let ok = Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("bin")
        .status()
        .unwrap()
        .success();
    assert!(ok, "tar failed");
    let diff_id = sha256(&std::fs::read(&tar).unwrap());
    // Compressed, because skopeo would otherwise gzip it on the way (changing the manifest).
    let gz = Command::new("gzip")
        .args(["-n", "-c"])
        .arg(&tar)
        .output()
        .unwrap();
    assert!(gz.status.success(), "gzip failed");
    std::fs::remove_file(&tar).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    let layer = blob(
        dir,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &gz.stdout,
    );
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh", "-c", "echo hello from berth"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config = blob(
        dir,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [layer],
    });
    let mut desc = blob(
        dir,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": "1"});
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [desc]}).to_string(),
    )
    .unwrap();
    desc["digest"].as_str().unwrap().to_string()
}

/// Runs skopeo; returns success, stdout and stdout+stderr.
async fn skopeo(args: &[&str]) -> (bool, String, String) {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(180),
        tokio::process::Command::new("skopeo").args(args).output(),
    )
    .await
    .expect("skopeo timed out")
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        text,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_push_and_pull_round_trip() {
    if Command::new("skopeo").arg("--version").output().is_err() {
        println!("skipping: skopeo is not installed");
        return;
    }
    if !Path::new("/bin/busybox").exists() {
        println!("skipping: /bin/busybox is missing");
        return;
    }
    let tmp = TempDir(std::env::temp_dir().join(format!("berth-skopeo-{}", uuid::Uuid::new_v4())));
    std::fs::create_dir_all(&tmp.0).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let scope = Scope {
        region: "us-east-1".into(),
        account: "000000000000".into(),
    };
    let reg = Arc::new(Registry::open(&tmp.0.join("data"), store, scope, host.clone()).unwrap());
    let server = tokio::spawn(axum::serve(listener, reg.clone().router()).into_future());

    let created = reg
        .handle_ecr("CreateRepository", br#"{"repositoryName":"team/busybox"}"#)
        .await
        .unwrap();
    let uri = created["repository"]["repositoryUri"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(uri, format!("{host}/team/busybox"));
    let token = reg
        .handle_ecr("GetAuthorizationToken", b"{}")
        .await
        .unwrap();
    let creds = base64::engine::general_purpose::STANDARD
        .decode(
            token["authorizationData"][0]["authorizationToken"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let creds = String::from_utf8(creds).unwrap();

    let src = tmp.0.join("src");
    let manifest_digest = build_layout(&src);
    let src_ref = format!("oci:{}:1", src.display());
    let dest_ref = format!("docker://{uri}:1");

    // Pushing to a repository that was never created fails with NAME_UNKNOWN.
    // Without credentials nothing goes in (the registry requires them by default, as ECR).
    let (ok, _, text) = skopeo(&["copy", "--dest-tls-verify=false", &src_ref, &dest_ref]).await;
    assert!(!ok, "an anonymous push succeeded: {text}");

    let (ok, _, text) = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &src_ref,
        &format!("docker://{host}/missing:1"),
    ])
    .await;
    assert!(!ok, "push to a missing repository succeeded: {text}");

    let (ok, _, text) = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &src_ref,
        &dest_ref,
    ])
    .await;
    assert!(ok, "skopeo push failed: {text}");

    let (ok, raw, text) = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        &creds,
        &dest_ref,
    ])
    .await;
    assert!(ok, "skopeo inspect failed: {text}");
    assert_eq!(
        sha256(raw.trim_end().as_bytes()),
        manifest_digest,
        "raw manifest differs: {raw}"
    );

    let dst = tmp.0.join("dst");
    let (ok, _, text) = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        &creds,
        &dest_ref,
        &format!("oci:{}:1", dst.display()),
    ])
    .await;
    assert!(ok, "skopeo pull failed: {text}");
    let index: Value =
        serde_json::from_slice(&std::fs::read(dst.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"].as_str().unwrap(),
        manifest_digest
    );
    // Every blob came back byte-identical.
    for entry in std::fs::read_dir(src.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let pulled = std::fs::read(dst.join("blobs/sha256").join(entry.file_name())).unwrap();
        assert_eq!(pulled, std::fs::read(entry.path()).unwrap());
    }
    let images = reg
        .handle_ecr("ListImages", br#"{"repositoryName":"team/busybox"}"#)
        .await
        .unwrap();
    assert_eq!(
        images["imageIds"],
        json!([{"imageDigest": manifest_digest, "imageTag": "1"}])
    );
    println!("skopeo round trip ok: {uri}:1 = {manifest_digest}");
    server.abort();
}
