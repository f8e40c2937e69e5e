//! Fuzzes layer unpacking: arbitrary sequences of tar entries (directories, files, symlinks,
//! hard links, devices, FIFOs) whose names and link targets are built from parts that matter
//! (`..`, `.`, whiteouts, opaque markers, absolute paths to a canary next to the root) are
//! unpacked into `<sandbox>/snap/fs`, with openat2 and walking one component at a time. After
//! each run nothing outside `snap/fs` may have changed: the canary tree is compared in full.
//!
//! Run it as root inside a throwaway mount namespace whose other mounts are read-only (see
//! `crates/berth-agent/fuzz/README.md`): a bug here writes to the host.

#![no_main]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[path = "../../src/unpack.rs"]
#[allow(dead_code)]
mod unpack;

#[derive(Arbitrary, Debug)]
enum Part {
    A,
    B,
    Evil,
    Dot,
    DotDot,
    Empty,
    WhA,
    WhEvil,
    WhDot,
    WhDotDot,
    Opq,
    Canary,
    Victim,
}

impl Part {
    fn s(&self) -> &'static str {
        match self {
            Part::A => "a",
            Part::B => "b",
            Part::Evil => "evil",
            Part::Dot => ".",
            Part::DotDot => "..",
            Part::Empty => "",
            Part::WhA => ".wh.a",
            Part::WhEvil => ".wh.evil",
            Part::WhDot => ".wh..",
            Part::WhDotDot => ".wh...",
            Part::Opq => ".wh..wh..opq",
            Part::Canary => "canary",
            Part::Victim => "victim",
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Name {
    absolute: bool,
    parts: Vec<Part>,
}

#[derive(Arbitrary, Debug)]
enum Target {
    Rel(Name),
    CanaryDir,
    CanaryFile,
    HostRoot,
}

#[derive(Arbitrary, Debug)]
enum Kind {
    Dir,
    File(u8),
    Sym(Target),
    Hard(Target),
    Char(u8, u8),
    Block(u8, u8),
    Fifo,
}

#[derive(Arbitrary, Debug)]
struct Entry {
    name: Name,
    kind: Kind,
    mode: u16,
}

#[derive(Arbitrary, Debug)]
struct Layer {
    per_component: bool,
    entries: Vec<Entry>,
}

fn name(n: &Name) -> String {
    let mut s = if n.absolute { "/".to_string() } else { String::new() };
    s.push_str(
        &n.parts
            .iter()
            .take(8)
            .map(Part::s)
            .collect::<Vec<_>>()
            .join("/"),
    );
    s
}

fn target(t: &Target, base: &Path) -> String {
    match t {
        Target::Rel(n) => name(n),
        Target::CanaryDir => base.join("canary").to_string_lossy().into_owned(),
        Target::CanaryFile => base.join("canary/victim").to_string_lossy().into_owned(),
        Target::HostRoot => "/".into(),
    }
}

fn tar_of(layer: &Layer, base: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in layer.entries.iter().take(32) {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        h.set_mode(e.mode as u32 & 0o7777);
        let mut data = Vec::new();
        let mut link = None;
        match &e.kind {
            Kind::Dir => h.set_entry_type(tar::EntryType::Directory),
            Kind::File(n) => {
                h.set_entry_type(tar::EntryType::Regular);
                data = vec![b'x'; *n as usize];
                h.set_size(data.len() as u64);
            }
            Kind::Sym(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                link = Some(target(t, base));
            }
            Kind::Hard(t) => {
                h.set_entry_type(tar::EntryType::Link);
                link = Some(target(t, base));
            }
            Kind::Char(ma, mi) | Kind::Block(ma, mi) => {
                h.set_entry_type(if matches!(e.kind, Kind::Char(..)) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                });
                let _ = h.set_device_major(*ma as u32);
                let _ = h.set_device_minor(*mi as u32);
            }
            Kind::Fifo => h.set_entry_type(tar::EntryType::Fifo),
        }
        let n = name(&e.name);
        if n.len() >= 100 || link.as_ref().is_some_and(|l| l.len() >= 100) {
            continue;
        }
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..n.len()].copy_from_slice(n.as_bytes());
        if let Some(l) = &link {
            old.linkname = [0; 100];
            old.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        let _ = b.append(&h, &data[..]);
    }
    b.into_inner().unwrap_or_default()
}

/// Everything observable about a tree outside the root.
fn fingerprint(dir: &Path, out: &mut Vec<String>) {
    let mut names: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().map(|e| e.file_name()).collect(),
        Err(e) => {
            out.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    names.sort();
    for n in names {
        let p = dir.join(&n);
        let m = std::fs::symlink_metadata(&p).unwrap();
        let mut buf = [0u8; 8];
        let opq = rustix::fs::lgetxattr(&p, "trusted.overlay.opaque", &mut buf[..]).ok();
        out.push(format!(
            "{} mode={:o} nlink={} size={} opaque={opq:?}",
            p.display(),
            m.mode(),
            m.nlink(),
            m.len()
        ));
        if m.is_file() {
            out.push(format!("{:?}", std::fs::read(&p).unwrap()));
        }
        if m.is_dir() {
            fingerprint(&p, out);
        }
    }
}

fn sandbox() -> &'static (PathBuf, Vec<String>) {
    static S: OnceLock<(PathBuf, Vec<String>)> = OnceLock::new();
    S.get_or_init(|| {
        let base = std::env::var_os("BERTH_FUZZ_SANDBOX")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("berth-fuzz-sandbox"));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("canary/sub")).unwrap();
        std::fs::write(base.join("canary/victim"), b"host data").unwrap();
        std::fs::write(base.join("canary/sub/file"), b"more").unwrap();
        let mut fp = Vec::new();
        fingerprint(&base.join("canary"), &mut fp);
        (base, fp)
    })
}

fuzz_target!(|layer: Layer| {
    let (base, want) = sandbox();
    let snap = base.join("snap");
    let root = snap.join("fs");
    let _ = std::fs::remove_dir_all(&snap);
    std::fs::create_dir_all(&root).unwrap();
    let data = tar_of(&layer, base);
    let r = if layer.per_component {
        unpack::unpack_layer_per_component(&data[..], &root)
    } else {
        unpack::unpack_layer(&data[..], &root)
    };
    if let Err(e) = &r {
        let msg = e.to_string();
        assert!(
            !msg.contains(&*base.to_string_lossy()),
            "error shows a host path: {msg}"
        );
    }
    let mut got = Vec::new();
    fingerprint(&base.join("canary"), &mut got);
    assert_eq!(&got, want, "the canary changed");
    let top: Vec<_> = std::fs::read_dir(base)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut top = top;
    top.sort();
    assert_eq!(top, ["canary", "snap"], "something appeared next to the root");
    let inner: Vec<_> = std::fs::read_dir(&snap)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(inner.len(), 1, "something appeared next to the root");
    assert!(std::fs::symlink_metadata(&root).unwrap().is_dir());
});
