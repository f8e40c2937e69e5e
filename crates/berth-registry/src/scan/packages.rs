//! What is installed in an image: the package databases and `os-release` found in its layers.
//!
//! Layers are read in order (gzip-compressed or plain tar, detected by their magic bytes; zstd
//! is refused) and only the files the scanner needs are kept: `var/lib/dpkg/status`,
//! `var/lib/dpkg/status.d/*` (distroless images), `lib/apk/db/installed`, `etc/os-release` and
//! `usr/lib/os-release`. OCI whiteouts apply across layers (image-spec `layer.md`): a
//! `.wh.<name>` entry removes `<name>` (and everything under it) from the layers below, and
//! `<dir>/.wh..wh..opq` removes everything below `<dir>` that lower layers put there.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Binary package name (dpkg `Package`, apk `P`).
    pub name: String,
    /// Installed version (dpkg `Version`, apk `V`).
    pub version: String,
    /// Source package name (dpkg `Source`, apk origin `o`); vulnerability databases of
    /// distributions name source packages.
    pub source: Option<String>,
    /// Source package version when dpkg's `Source: name (version)` gives one.
    pub source_version: Option<String>,
    /// `dpkg` or `apk`.
    pub manager: Manager,
}

/// The package manager a database belongs to (decides the version order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Dpkg,
    Apk,
}

impl Manager {
    /// `dpkg` / `apk`.
    pub fn name(self) -> &'static str {
        match self {
            Manager::Dpkg => "dpkg",
            Manager::Apk => "apk",
        }
    }
}

/// The distribution from `os-release` (`ID`, `VERSION_ID`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub id: String,
    pub version_id: String,
}

/// What a walk over an image's layers found.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub os: Option<OsRelease>,
    pub packages: Vec<Package>,
    /// Whether any package database was present (an empty one counts).
    pub has_database: bool,
}

/// Why layers could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A zstd-compressed layer (berth has no zstd decoder).
    #[error("layer {0} is zstd-compressed, which berth's scanner does not read")]
    Zstd(String),
    /// The layer is not a (gzip) tar archive or its bytes are damaged.
    #[error("layer {layer} cannot be read as a tar archive: {error}")]
    Unreadable { layer: String, error: String },
}

fn normalize(path: &str) -> String {
    let p = path.trim_start_matches("./").trim_start_matches('/');
    p.trim_end_matches('/').to_string()
}

fn wanted(path: &str) -> bool {
    matches!(
        path,
        "var/lib/dpkg/status" | "lib/apk/db/installed" | "etc/os-release" | "usr/lib/os-release"
    ) || path
        .strip_prefix("var/lib/dpkg/status.d/")
        .is_some_and(|rest| !rest.is_empty() && !rest.contains('/') && !rest.ends_with(".md5sums"))
}

/// The files of interest after applying `layers` (paths to layer blobs, bottom first; `name`
/// labels each in errors) in order, whiteouts included.
pub fn collect_files(
    layers: &[(String, std::path::PathBuf)],
) -> Result<BTreeMap<String, Vec<u8>>, LayerError> {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (name, path) in layers {
        apply_layer(&mut files, name, path)?;
    }
    Ok(files)
}

fn apply_layer(
    files: &mut BTreeMap<String, Vec<u8>>,
    name: &str,
    path: &Path,
) -> Result<(), LayerError> {
    let unreadable = |e: std::io::Error| LayerError::Unreadable {
        layer: name.to_string(),
        error: e.to_string(),
    };
    let mut f = std::fs::File::open(path).map_err(unreadable)?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(unreadable)?;
    drop(f);
    let f = std::io::BufReader::with_capacity(
        256 * 1024,
        std::fs::File::open(path).map_err(unreadable)?,
    );
    let reader: Box<dyn Read> = if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        return Err(LayerError::Zstd(name.to_string()));
    } else {
        Box::new(f)
    };
    let mut archive = tar::Archive::new(reader);
    // This layer's own files and whiteouts; whiteouts only hide what lower layers hold.
    let mut added: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut removed: Vec<String> = Vec::new();
    let mut opaque: Vec<String> = Vec::new();
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let raw = entry
            .path()
            .map_err(unreadable)?
            .to_string_lossy()
            .into_owned();
        let p = normalize(&raw);
        let (dir, base) = match p.rsplit_once('/') {
            Some((d, b)) => (d.to_string(), b.to_string()),
            None => (String::new(), p.clone()),
        };
        if base == ".wh..wh..opq" {
            opaque.push(dir);
            continue;
        }
        if let Some(hidden) = base.strip_prefix(".wh.") {
            removed.push(if dir.is_empty() {
                hidden.to_string()
            } else {
                format!("{dir}/{hidden}")
            });
            continue;
        }
        let kind = entry.header().entry_type();
        if !wanted(&p) {
            continue;
        }
        if kind.is_file() {
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf).map_err(unreadable)?;
            added.insert(p, buf);
        } else if kind.is_hard_link() || kind.is_symlink() {
            // Resolve links to files tracked so far (os-release is usually a symlink).
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            let target = if kind.is_symlink() && !target.starts_with('/') {
                resolve_relative(&dir, &target)
            } else {
                normalize(&target)
            };
            match added.get(&target).or_else(|| files.get(&target)).cloned() {
                Some(b) => {
                    added.insert(p, b);
                }
                None => removed.push(p),
            }
        } else {
            removed.push(p);
        }
    }
    let under = |k: &str, d: &str| d.is_empty() || k == d || k.starts_with(&format!("{d}/"));
    files.retain(|k, _| {
        !opaque.iter().any(|d| under(k, d) && k != d) && !removed.iter().any(|r| under(k, r))
    });
    files.extend(added);
    Ok(())
}

fn resolve_relative(dir: &str, target: &str) -> String {
    let mut parts: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
    for seg in target.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// Paragraphs of a deb822-style file (`Key: value`, continuation lines start with a space).
fn deb822(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut cur: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            last = None;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(k) = &last {
                if let Some(v) = cur.get_mut(k) {
                    v.push('\n');
                    v.push_str(line.trim());
                }
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            cur.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            last = Some(k.trim().to_ascii_lowercase());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The installed packages of a dpkg status file: paragraphs whose `Status` ends in `installed`
/// (paragraphs without `Status`, as in distroless `status.d/` files, count as installed).
pub fn parse_dpkg_status(text: &str) -> Vec<Package> {
    deb822(text)
        .into_iter()
        .filter(|p| {
            p.get("status")
                .is_none_or(|s| s.split_whitespace().last() == Some("installed"))
        })
        .filter_map(|p| {
            let name = p.get("package")?.clone();
            let version = p.get("version")?.clone();
            let (source, source_version) = match p.get("source") {
                Some(s) => match s.split_once('(') {
                    Some((n, v)) => (
                        Some(n.trim().to_string()),
                        Some(v.trim_end_matches(')').trim().to_string()),
                    ),
                    None => (Some(s.trim().to_string()), None),
                },
                None => (None, None),
            };
            Some(Package {
                name,
                version,
                source,
                source_version,
                manager: Manager::Dpkg,
            })
        })
        .collect()
}

/// The installed packages of an apk database (`P:` name, `V:` version, `o:` origin).
pub fn parse_apk_installed(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    let mut cur: BTreeMap<char, String> = BTreeMap::new();
    let mut flush = |cur: &mut BTreeMap<char, String>| {
        if let (Some(n), Some(v)) = (cur.get(&'P'), cur.get(&'V')) {
            out.push(Package {
                name: n.clone(),
                version: v.clone(),
                source: cur.get(&'o').cloned(),
                source_version: None,
                manager: Manager::Apk,
            });
        }
        cur.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut cur);
            continue;
        }
        let mut chars = line.chars();
        if let (Some(k), Some(':')) = (chars.next(), chars.next()) {
            cur.entry(k).or_insert_with(|| chars.as_str().to_string());
        }
    }
    flush(&mut cur);
    out
}

/// `ID` and `VERSION_ID` of an os-release file (quotes removed).
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut os = OsRelease::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches(['"', '\'']).to_string();
        match k.trim() {
            "ID" => os.id = v,
            "VERSION_ID" => os.version_id = v,
            _ => {}
        }
    }
    os
}

/// The inventory of the collected `files` (see [`collect_files`]).
pub fn inventory(files: &BTreeMap<String, Vec<u8>>) -> Inventory {
    let text = |p: &str| {
        files
            .get(p)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    let os = text("etc/os-release")
        .or_else(|| text("usr/lib/os-release"))
        .map(|t| parse_os_release(&t));
    let mut inv = Inventory {
        os,
        ..Default::default()
    };
    for (path, bytes) in files {
        let t = String::from_utf8_lossy(bytes);
        if path == "var/lib/dpkg/status" || path.starts_with("var/lib/dpkg/status.d/") {
            inv.has_database = true;
            inv.packages.extend(parse_dpkg_status(&t));
        } else if path == "lib/apk/db/installed" {
            inv.has_database = true;
            inv.packages.extend(parse_apk_installed(&t));
        }
    }
    inv.packages
        .sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    inv.packages.dedup();
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(
        dir: &Path,
        name: &str,
        entries: &[(&str, Option<&[u8]>)],
        gzip: bool,
    ) -> (String, std::path::PathBuf) {
        let path = dir.join(name);
        let f = std::fs::File::create(&path).unwrap();
        let w: Box<dyn std::io::Write> = if gzip {
            Box::new(flate2::write::GzEncoder::new(
                f,
                flate2::Compression::fast(),
            ))
        } else {
            Box::new(f)
        };
        let mut b = tar::Builder::new(w);
        for (p, content) in entries {
            let mut h = tar::Header::new_gnu();
            match content {
                Some(c) => {
                    h.set_size(c.len() as u64);
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_cksum();
                    b.append_data(&mut h, p, *c).unwrap();
                }
                None => {
                    h.set_size(0);
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_cksum();
                    b.append_data(&mut h, p, std::io::empty()).unwrap();
                }
            }
        }
        b.into_inner().unwrap().flush().unwrap();
        (name.to_string(), path)
    }

    const STATUS: &str = "Package: libssl3\nStatus: install ok installed\nVersion: 3.0.11-1~deb12u2\nSource: openssl\nDescription: x\n multi-line\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\nPackage: zlib1g\nStatus: install ok installed\nSource: zlib (1:1.2.13.dfsg-1)\nVersion: 1:1.2.13.dfsg-1+b1\n";

    #[test]
    fn parses_dpkg_apk_and_os_release() {
        let p = parse_dpkg_status(STATUS);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "libssl3");
        assert_eq!(p[0].source.as_deref(), Some("openssl"));
        assert_eq!(p[1].source_version.as_deref(), Some("1:1.2.13.dfsg-1"));
        let a = parse_apk_installed(
            "C:Q1x\nP:libcrypto3\nV:3.1.4-r5\no:openssl\n\nP:musl\nV:1.2.4-r2\n",
        );
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].source.as_deref(), Some("openssl"));
        assert_eq!(a[1].source, None);
        let os = parse_os_release("NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n");
        assert_eq!(
            (os.id.as_str(), os.version_id.as_str()),
            ("alpine", "3.19.1")
        );
    }

    #[test]
    fn whiteouts_apply_across_layers() {
        let dir = std::env::temp_dir().join(format!("berth-scan-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let l1 = layer(
            &dir,
            "l1",
            &[
                ("./etc/os-release", Some(b"ID=debian\nVERSION_ID=\"12\"\n")),
                ("var/lib/dpkg/status", Some(STATUS.as_bytes())),
                ("lib/apk/db/installed", Some(b"P:x\nV:1-r0\n")),
            ],
            true,
        );
        // Layer 2 deletes the apk database and replaces var/lib/dpkg via an opaque directory.
        let l2 = layer(
            &dir,
            "l2",
            &[
                ("lib/apk/db/.wh.installed", Some(b"")),
                ("var/lib/dpkg/", None),
                ("var/lib/dpkg/.wh..wh..opq", Some(b"")),
            ],
            false,
        );
        let files = collect_files(std::slice::from_ref(&l1)).unwrap();
        let inv = inventory(&files);
        assert_eq!(inv.packages.len(), 3);
        assert_eq!(inv.os.unwrap().version_id, "12");
        let files = collect_files(&[l1.clone(), l2.clone()]).unwrap();
        let inv = inventory(&files);
        assert!(inv.packages.is_empty(), "{inv:?}");
        assert!(!inv.has_database);
        // A whiteout of a parent directory hides everything below it.
        let l3 = layer(&dir, "l3", &[("var/lib/.wh.dpkg", Some(b""))], true);
        let files = collect_files(&[l1.clone(), l3]).unwrap();
        assert!(!files.contains_key("var/lib/dpkg/status"));
        assert!(files.contains_key("lib/apk/db/installed"));
        // A file re-added above an opaque directory in the same layer stays.
        let l4 = layer(
            &dir,
            "l4",
            &[
                ("var/lib/dpkg/.wh..wh..opq", Some(b"")),
                (
                    "var/lib/dpkg/status",
                    Some(b"Package: a\nStatus: install ok installed\nVersion: 1\n"),
                ),
            ],
            true,
        );
        let inv = inventory(&collect_files(&[l1, l4]).unwrap());
        assert_eq!(
            inv.packages
                .iter()
                .filter(|p| p.manager == Manager::Dpkg)
                .count(),
            1
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
