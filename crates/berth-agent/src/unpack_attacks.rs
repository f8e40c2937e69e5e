//! Malicious layers against [`crate::unpack::unpack_layer`]: each is unpacked into
//! `<base>/root` next to a canary tree `<base>/canary` that must come out unchanged (contents,
//! types, link counts, the opaque xattr), and errors must not show host paths.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::unpack::unpack_layer;

enum E {
    Dir(&'static str),
    File(&'static str, &'static [u8]),
    Sym(&'static str, String),
    Hard(&'static str, String),
    Char(&'static str, u32, u32),
    Block(&'static str, u32, u32),
}

/// A tar of `entries`, names written as given (no `..` filtering by the builder).
fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        h.set_size(0);
        h.set_mode(0o644);
        let (name, link, data): (&str, Option<&String>, &[u8]) = match e {
            E::Dir(n) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                (n, None, b"")
            }
            E::File(n, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                (n, None, d)
            }
            E::Sym(n, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                (n, Some(t), b"")
            }
            E::Hard(n, t) => {
                h.set_entry_type(tar::EntryType::Link);
                (n, Some(t), b"")
            }
            E::Char(n, ma, mi) | E::Block(n, ma, mi) => {
                h.set_entry_type(if matches!(e, E::Char(..)) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                });
                h.set_device_major(*ma).unwrap();
                h.set_device_minor(*mi).unwrap();
                (n, None, b"")
            }
        };
        let old = h.as_old_mut();
        assert!(name.len() < 100);
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            assert!(l.len() < 100);
            old.linkname = [0; 100];
            old.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

struct Scene {
    base: PathBuf,
    root: PathBuf,
    canary: PathBuf,
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn scene(tag: &str) -> Scene {
    let base = std::env::temp_dir().join(format!("berth-unpack-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let root = base.join("snap").join("fs");
    let canary = base.join("canary");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(canary.join("sub")).unwrap();
    std::fs::write(canary.join("victim"), b"host data\n").unwrap();
    std::fs::write(canary.join("sub").join("file"), b"more host data\n").unwrap();
    Scene { base, root, canary }
}

/// Everything observable about a tree: path, type, size, link count, contents, opaque xattr.
fn fingerprint(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(d: &Path, rel: &str, out: &mut Vec<String>) {
        let mut names: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let p = d.join(&n);
            let r = format!("{rel}/{}", n.to_string_lossy());
            let m = std::fs::symlink_metadata(&p).unwrap();
            let opq = rustix::fs::lgetxattr(&p, "trusted.overlay.opaque", &mut [0u8; 8][..]).ok();
            let what = if m.is_dir() {
                "dir".to_string()
            } else if m.is_file() {
                format!("file {:?}", std::fs::read(&p).unwrap())
            } else {
                format!("other {:o}", m.mode())
            };
            out.push(format!("{r} {what} nlink={} opaque={opq:?}", m.nlink()));
            if m.is_dir() {
                walk(&p, &r, out);
            }
        }
    }
    walk(dir, "", &mut out);
    out
}

/// Unpacks `entries` (with openat2 and walking one component at a time); expects a failure
/// that names no host path, an unchanged canary and the root still in place. Returns the
/// error message.
fn refused(tag: &str, entries: impl Fn(&Scene) -> Vec<E>) -> String {
    let mut msg = String::new();
    for walk in [false, true] {
        let tag = format!("{tag}{}", if walk { "-walk" } else { "" });
        let s = scene(&tag);
        let before = fingerprint(&s.canary);
        let data = layer(&entries(&s));
        let r = if walk {
            crate::unpack::unpack_layer_per_component(&data[..], &s.root).map_err(|e| e.to_string())
        } else {
            unpack_layer(&data[..], &s.root).map_err(|e| e.to_string())
        };
        let after = if s.canary.exists() {
            fingerprint(&s.canary)
        } else {
            vec!["<canary deleted>".into()]
        };
        assert_eq!(before, after, "{tag}: the host canary changed");
        assert!(
            s.root.exists(),
            "{tag}: the root or a directory around it is gone"
        );
        let e = match r {
            Ok(d) => panic!("{tag}: malicious layer unpacked ({d})"),
            Err(e) => e,
        };
        let host = s.base.to_string_lossy().to_string();
        assert!(!e.contains(&host), "{tag}: error shows a host path: {e}");
        if walk {
            assert_eq!(e, msg, "{tag}: both ways give the same error");
        }
        msg = e;
    }
    msg
}

fn abs(s: &Scene, rel: &str) -> String {
    s.canary.join(rel).to_string_lossy().into_owned()
}

fn sym(n: &'static str, t: &str) -> E {
    E::Sym(n, t.to_string())
}

fn hard(n: &'static str, t: &str) -> E {
    E::Hard(n, t.to_string())
}

#[test]
fn whiteout_through_absolute_symlink() {
    let e = refused("wh-abs", |s| {
        vec![sym("evil", &abs(s, "")), E::File("evil/.wh.victim", b"")]
    });
    assert_eq!(
        e,
        "unsafe layer entry \"evil/.wh.victim\": the path goes through a symbolic link"
    );
}

#[test]
fn whiteout_through_relative_symlink() {
    // <base>/snap/fs/a/evil -> ../../../canary = <base>/canary
    refused("wh-rel", |_| {
        vec![
            E::Dir("a/"),
            sym("a/evil", "../../../canary"),
            E::File("a/evil/.wh.victim", b""),
        ]
    });
    refused("wh-rel-dir", |_| {
        vec![sym("evil", "../../canary"), E::File("evil/.wh.sub", b"")]
    });
}

#[test]
fn whiteout_of_dot_dot() {
    // `.wh...` names `..`: the parent of the root.
    refused("wh-dotdot", |_| vec![E::File(".wh...", b"")]);
    refused("wh-dot", |_| vec![E::Dir("a/"), E::File("a/.wh..", b"")]);
}

#[test]
fn opaque_marker_through_symlink() {
    let e = refused("opq", |s| {
        vec![
            sym("evil", &abs(s, "")),
            E::File("evil/sub/.wh..wh..opq", b""),
        ]
    });
    assert!(e.contains("symbolic link"), "{e}");
}

#[test]
fn dir_and_file_replacement_through_symlinks() {
    // A file entry where the host has a directory, and a directory entry where it has a file.
    refused("repl-file", |s| {
        vec![sym("evil", &abs(s, "")), E::File("evil/sub", b"x")]
    });
    refused("repl-dir", |s| {
        vec![sym("evil", &abs(s, "")), E::Dir("evil/victim/")]
    });
}

#[test]
fn regular_file_through_symlinked_parent() {
    refused("file-parent", |s| {
        vec![sym("evil", &abs(s, "")), E::File("evil/victim", b"pwned")]
    });
    refused("file-parent-new", |s| {
        vec![
            sym("evil", &abs(s, "")),
            E::File("evil/new/planted", b"pwned"),
        ]
    });
}

#[test]
fn hard_link_targets_outside() {
    // `/etc/shadow` style: an absolute host path as the link target.
    refused("hl-abs", |s| vec![hard("leak", &abs(s, "victim"))]);
    refused("hl-rel", |_| vec![hard("leak", "../../canary/victim")]);
    refused("hl-rel-deep", |_| {
        vec![E::Dir("a/"), hard("a/leak", "a/../../../canary/victim")]
    });
}

#[test]
fn hard_link_through_symlinked_parent() {
    refused("hl-sym", |s| {
        vec![sym("evil", &abs(s, "")), hard("leak", "evil/victim")]
    });
}

#[test]
fn dot_dot_entries() {
    refused("dotdot-file", |_| {
        vec![E::File("../../canary/planted", b"x")]
    });
    refused("dotdot-mid", |_| {
        vec![E::Dir("a/"), E::File("a/../../../canary/x", b"x")]
    });
    refused("dotdot-dir", |_| vec![E::Dir("../../canary/newdir/")]);
}

#[test]
fn device_nodes_are_skipped() {
    let s = scene("dev");
    let data = layer(&[
        E::Dir("dev/"),
        E::Char("dev/mem", 1, 1),
        E::Block("dev/sda", 8, 0),
        E::Char("dev/kmsg", 1, 11),
        E::File("ok", b"fine"),
    ]);
    unpack_layer(&data[..], &s.root).expect("a layer with device nodes unpacks");
    for d in ["dev/mem", "dev/sda", "dev/kmsg"] {
        assert!(
            std::fs::symlink_metadata(s.root.join(d)).is_err(),
            "device node {d} was created"
        );
    }
    assert_eq!(std::fs::read(s.root.join("ok")).unwrap(), b"fine");
}

#[test]
fn final_symlink_is_replaced_not_followed() {
    let s = scene("final");
    let before = fingerprint(&s.canary);
    let data = layer(&[
        sym("evil", &abs(&s, "victim")),
        E::File("evil", b"replaced"),
        sym("evil2", &abs(&s, "sub")),
        E::Dir("evil2/"),
        E::File("evil2/inner", b"inside"),
        sym("evil3", &abs(&s, "victim")),
        E::File(".wh.evil3", b""),
    ]);
    unpack_layer(&data[..], &s.root).expect("replacing symlinks is fine");
    assert_eq!(before, fingerprint(&s.canary), "the host canary changed");
    assert_eq!(std::fs::read(s.root.join("evil")).unwrap(), b"replaced");
    assert!(std::fs::symlink_metadata(s.root.join("evil2"))
        .unwrap()
        .is_dir());
    assert_eq!(
        std::fs::read(s.root.join("evil2/inner")).unwrap(),
        b"inside"
    );
}

#[test]
fn ordinary_layer_unpacks_in_overlay_form() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let s = scene("ok");
    let mut data = layer(&[
        E::Dir("etc/"),
        E::File("etc/hello", b"hi\n"),
        E::File("etc/.wh.gone", b""),
        E::Dir("cache/"),
        E::File("cache/.wh..wh..opq", b""),
        E::Dir("bin/"),
        E::File("bin/busybox", b"#!"),
        hard("bin/sh", "bin/busybox"),
        sym("bin/ls", "busybox"),
        sym("usrbin", "/usr/bin"),
        E::File("new/deep/file", b"parents made"),
    ]);
    // A setuid file, via a header edited in place (mode is in the first entry's header).
    {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o4755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        b.append_data(&mut h, "bin/su", &b"x"[..]).unwrap();
        let extra = b.into_inner().unwrap();
        // Drop the first archive's end blocks (two zero blocks) and append.
        let end = data.len() - 1024;
        data.truncate(end);
        data.extend_from_slice(&extra);
    }
    let digest = unpack_layer(&data[..], &s.root).unwrap();
    use sha2::Digest;
    assert_eq!(
        digest,
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&data)))
    );
    let r = &s.root;
    assert_eq!(std::fs::read(r.join("etc/hello")).unwrap(), b"hi\n");
    let m = std::fs::symlink_metadata(r.join("etc/gone")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), 0);
    assert!(!r.join("etc/.wh.gone").exists());
    assert!(!r.join("cache/.wh..wh..opq").exists());
    let mut buf = [0u8; 4];
    let n = rustix::fs::lgetxattr(r.join("cache"), "trusted.overlay.opaque", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"y");
    let a = std::fs::metadata(r.join("bin/busybox")).unwrap();
    let b = std::fs::metadata(r.join("bin/sh")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert_eq!(
        std::fs::read_link(r.join("bin/ls")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        std::fs::read_link(r.join("usrbin")).unwrap(),
        Path::new("/usr/bin")
    );
    assert_eq!(
        std::fs::read(r.join("new/deep/file")).unwrap(),
        b"parents made"
    );
    let su = std::fs::metadata(r.join("bin/su")).unwrap();
    assert_eq!(su.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(su.mtime(), 1_000_000);
    assert_eq!(std::fs::metadata(r.join("etc")).unwrap().mtime(), 1_000_000);
}
