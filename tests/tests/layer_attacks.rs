//! A malicious image must not write outside its rootfs: its layers (built here as an OCI
//! layout and pushed with skopeo) delete a host file through an absolute symlink and through a
//! relative `../..` symlink. RunTask must stop the task with `TaskFailedToStart` and a
//! `CannotPullContainerError: ...` reason that names no host path, and the host files must be
//! untouched.

use std::path::Path;
use std::time::Duration;

use berth_tests::{fargate_taskdef, temp_dir, Server};
use serde_json::json;
use sha2::{Digest, Sha256};

/// A tar whose entries are (name, symlink target or None for an empty regular file).
fn layer(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        h.set_mode(0o644);
        match link {
            Some(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, name, t).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, name, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn put_blob(dir: &Path, b: &[u8]) -> (String, usize) {
    let d = digest(b);
    std::fs::write(dir.join("blobs/sha256").join(&d[7..]), b).unwrap();
    (d, b.len())
}

/// An OCI image layout at `dir` with tag `1`: the given uncompressed layers.
fn oci_layout(dir: &Path, layers: &[Vec<u8>]) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let descs: Vec<_> = layers
        .iter()
        .map(|l| {
            let (d, n) = put_blob(dir, l);
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n})
        })
        .collect();
    let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (cd, cn) = put_blob(dir, config.to_string().as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
        "layers": descs,
    });
    let (md, mn) = put_blob(dir, manifest.to_string().as_bytes());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": mn,
            "annotations": {"org.opencontainers.image.ref.name": "1"},
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

#[test]
fn malicious_layers_fail_the_pull_and_leave_the_host_alone() {
    let s = Server::start();
    // Host files the layers go after: one by absolute path, one next to the snapshots
    // (`<agent-dir>/snapshots/<chain>.tmp-<pid>/fs/../../..` is the agent's data dir).
    let agent_dir = s.data_dir.join("agent");
    let canary = temp_dir("canary");
    std::fs::write(canary.join("victim"), b"host data").unwrap();
    std::fs::write(agent_dir.join("victim"), b"agent data").unwrap();
    let abs_attack = layer(&[
        ("evil", Some(canary.to_str().unwrap())),
        ("evil/.wh.victim", None),
    ]);
    let rel_attack = layer(&[("up", Some("../../..")), ("up/.wh.victim", None)]);
    let image = temp_dir("evil-image");
    oci_layout(&image, &[abs_attack, rel_attack]);
    s.push_image(&image, "1", "evil", "1");
    s.aws_ok(&["ecs", "create-cluster", "--cluster-name", "demo"]);
    let td = s.register(&fargate_taskdef("evil", "evil", json!({})));
    let arn = s.run_task("demo", &td, None);
    let t = s.wait_status("demo", &arn, "STOPPED", Duration::from_secs(60));
    assert_eq!(t["lastStatus"], "STOPPED", "{t}");
    assert_eq!(t["stopCode"], "TaskFailedToStart", "{t}");
    let reason = t["stoppedReason"].as_str().unwrap_or("");
    assert!(
        reason.starts_with("CannotPullContainerError: ")
            && reason.contains("failed to extract layer sha256:")
            && reason.contains("symbolic link"),
        "{t}"
    );
    let data_dir = s.data_dir.to_string_lossy().to_string();
    let tmp = std::env::temp_dir().to_string_lossy().to_string();
    for host in [data_dir.as_str(), tmp.as_str()] {
        assert!(
            !reason.contains(host),
            "the reason shows a host path: {reason}"
        );
    }
    assert_eq!(std::fs::read(canary.join("victim")).unwrap(), b"host data");
    assert_eq!(
        std::fs::read(agent_dir.join("victim")).unwrap(),
        b"agent data"
    );
    // Nothing half-unpacked stays behind.
    let left: Vec<_> = std::fs::read_dir(agent_dir.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "snapshots left: {left:?}");
    let _ = std::fs::remove_dir_all(&canary);
    let _ = std::fs::remove_dir_all(&image);
}
