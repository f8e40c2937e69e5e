//! Layer snapshots: each layer's diff unpacked (in overlayfs form) into
//! `snapshots/<chain id hex>/fs`, shared by every image whose layer stack begins the same way.
//! A snapshot is built in a temporary directory and renamed into place, so a crash leaves
//! nothing half-made.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex};

use sha2::{Digest, Sha256};

use crate::AgentError;

/// Chain ids for a list of layer diff ids (`sha256:<hex>`), per the OCI image spec:
/// `chain(0) = diff(0)`, `chain(n) = sha256(chain(n-1) + " " + diff(n))`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => {
                let h = Sha256::digest(format!("{prev} {d}").as_bytes());
                format!("sha256:{}", hex::encode(h))
            }
        };
        out.push(next);
    }
    out
}

/// `sha256:<hex>` -> `<hex>`, refusing anything that is not a plain hex digest (so it is safe in
/// a path).
pub fn digest_hex(digest: &str) -> Result<&str, AgentError> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| AgentError::Image(format!("unsupported digest {digest:?}")))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AgentError::Image(format!("invalid digest {digest:?}")));
    }
    Ok(hex)
}

/// The snapshot store under `<data_dir>/snapshots`.
pub struct Snapshots {
    root: PathBuf,
    locks: StdMutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

impl Compression {
    /// From a layer media type; `None` when unsupported.
    pub fn from_media_type(mt: &str) -> Option<Compression> {
        if mt.ends_with("+zstd") || mt.ends_with(".zstd") {
            None
        } else if mt.ends_with("gzip") || mt.ends_with(".gzip") {
            Some(Compression::Gzip)
        } else if mt.ends_with(".tar") || mt.ends_with("layer.v1.tar") || mt.is_empty() {
            Some(Compression::None)
        } else {
            None
        }
    }
}

impl Snapshots {
    pub fn new(root: PathBuf) -> Result<Snapshots, AgentError> {
        std::fs::create_dir_all(&root)?;
        // Leftovers of an unpack interrupted by a crash.
        if let Ok(rd) = std::fs::read_dir(&root) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().contains(".tmp-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(Snapshots {
            root,
            locks: StdMutex::new(HashMap::new()),
        })
    }

    /// The `fs` directory of the snapshot for `chain_id`.
    pub fn fs_dir(&self, chain_id: &str) -> Result<PathBuf, AgentError> {
        Ok(self.root.join(digest_hex(chain_id)?).join("fs"))
    }

    pub fn exists(&self, chain_id: &str) -> bool {
        self.fs_dir(chain_id).map(|p| p.is_dir()).unwrap_or(false)
    }

    fn lock_for(&self, chain_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(chain_id.to_string()).or_default().clone()
    }

    /// Makes sure the snapshot for `chain_id` exists, unpacking `blob` (a layer whose
    /// uncompressed digest must be `diff_id`) when it does not. Two callers for the same chain
    /// id wait for each other.
    pub async fn ensure(
        &self,
        chain_id: &str,
        diff_id: &str,
        blob: PathBuf,
        compression: Compression,
    ) -> Result<PathBuf, AgentError> {
        let fs = self.fs_dir(chain_id)?;
        if fs.is_dir() {
            return Ok(fs);
        }
        let lock = self.lock_for(chain_id);
        let _g = lock.lock().await;
        if fs.is_dir() {
            return Ok(fs);
        }
        let hex = digest_hex(chain_id)?.to_string();
        let tmp = self.root.join(format!("{hex}.tmp-{}", std::process::id()));
        let final_dir = self.root.join(&hex);
        let diff_id = diff_id.to_string();
        tokio::task::spawn_blocking(move || -> Result<(), AgentError> {
            let _ = std::fs::remove_dir_all(&tmp);
            let tmp_fs = tmp.join("fs");
            std::fs::create_dir_all(&tmp_fs)?;
            let res = (|| {
                let f = std::fs::File::open(&blob)?;
                let f = io::BufReader::with_capacity(256 * 1024, f);
                let got = match compression {
                    Compression::Gzip => unpack_layer(flate2::read::GzDecoder::new(f), &tmp_fs)?,
                    Compression::None => unpack_layer(f, &tmp_fs)?,
                };
                if got != diff_id {
                    return Err(AgentError::Image(format!(
                        "layer {} unpacked to {got}, expected diff id {diff_id}",
                        blob.display()
                    )));
                }
                std::fs::rename(&tmp, &final_dir)?;
                Ok(())
            })();
            if res.is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            res
        })
        .await
        .map_err(|e| AgentError::Io(io::Error::other(e)))??;
        Ok(fs)
    }
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// What a tar entry path means in overlayfs terms.
#[derive(Debug, PartialEq, Eq)]
pub enum Whiteout {
    /// Not a whiteout: unpack as is.
    No,
    /// `.wh..wh..opq` in directory `.0`: mark that directory opaque.
    Opaque(PathBuf),
    /// `.wh.<name>`: `.0` (the path without the prefix) is deleted.
    Delete(PathBuf),
}

/// Classifies a (relative, already cleaned) entry path.
pub fn classify_whiteout(path: &Path) -> Whiteout {
    let Some(name) = path.file_name() else {
        return Whiteout::No;
    };
    let name = name.to_string_lossy();
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    if name == ".wh..wh..opq" {
        Whiteout::Opaque(parent)
    } else if let Some(rest) = name.strip_prefix(".wh.") {
        Whiteout::Delete(parent.join(rest))
    } else {
        Whiteout::No
    }
}

/// Normalises a tar entry path to a relative path with no `..` or root components;
/// `None` for the root itself or a path that tries to escape.
pub fn clean_entry_path(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => return None,
        }
    }
    if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    }
}

fn set_opaque(dir: &Path) -> Result<(), AgentError> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| AgentError::Image("path with NUL".into()))?;
    let name = c"trusted.overlay.opaque";
    // SAFETY: valid NUL-terminated strings and a 1-byte value buffer.
    let r = unsafe {
        nix::libc::lsetxattr(
            c.as_ptr(),
            name.as_ptr(),
            b"y".as_ptr() as *const nix::libc::c_void,
            1,
            0,
        )
    };
    if r != 0 {
        return Err(AgentError::Io(io::Error::last_os_error()));
    }
    Ok(())
}

fn make_whiteout(path: &Path) -> Result<(), AgentError> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.is_dir() {
            std::fs::remove_dir_all(path)?;
        } else {
            std::fs::remove_file(path)?;
        }
    }
    mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
        .map_err(|e| AgentError::Io(io::Error::from(e)))?;
    Ok(())
}

/// Unpacks one layer tar stream into `dest`, converting OCI whiteouts into overlayfs form.
/// Returns the `sha256:` digest of the uncompressed stream (the layer's diff id).
pub fn unpack_layer<R: Read>(reader: R, dest: &Path) -> Result<String, AgentError> {
    let mut hr = HashingReader {
        inner: reader,
        hasher: Sha256::new(),
    };
    {
        let mut ar = tar::Archive::new(&mut hr);
        ar.set_preserve_permissions(true);
        ar.set_preserve_ownerships(true);
        ar.set_preserve_mtime(true);
        ar.set_unpack_xattrs(true);
        ar.set_overwrite(true);
        let mut opaque_dirs = Vec::new();
        for entry in ar.entries()? {
            let mut entry = entry?;
            let raw = entry.path()?.into_owned();
            let Some(rel) = clean_entry_path(&raw) else {
                continue;
            };
            match classify_whiteout(&rel) {
                Whiteout::No => {
                    // The parent may have been whited-out in this same layer (rare); unpack_in
                    // creates parents and refuses paths escaping `dest`.
                    if let Ok(m) = std::fs::symlink_metadata(dest.join(&rel)) {
                        // A non-directory replacing a directory, or the reverse.
                        let is_dir = entry.header().entry_type().is_dir();
                        if m.is_dir() && !is_dir {
                            std::fs::remove_dir_all(dest.join(&rel))?;
                        } else if !m.is_dir() && is_dir {
                            std::fs::remove_file(dest.join(&rel))?;
                        }
                    }
                    entry.unpack_in(dest)?;
                }
                Whiteout::Opaque(dir) => {
                    let d = dest.join(&dir);
                    std::fs::create_dir_all(&d)?;
                    opaque_dirs.push(d);
                }
                Whiteout::Delete(target) => {
                    let t = dest.join(&target);
                    if let Some(parent) = t.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    make_whiteout(&t)?;
                }
            }
        }
        // After everything: a later directory entry re-creating the dir must not lose the mark.
        for d in opaque_dirs {
            set_opaque(&d)?;
        }
    }
    // The tar reader may stop before the end-of-archive padding; the digest covers everything.
    io::copy(&mut hr, &mut io::sink())?;
    Ok(format!("sha256:{}", hex::encode(hr.hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_computation() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        let want = hex::encode(Sha256::digest(format!("{a} {b}").as_bytes()));
        assert_eq!(ids[1], format!("sha256:{want}"));
        assert!(chain_ids(&[]).is_empty());
        // A known vector: the single-layer chain is the diff id itself; three layers chain.
        let c = format!("sha256:{}", "c".repeat(64));
        let ids3 = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        let want3 = hex::encode(Sha256::digest(format!("{} {c}", ids[1]).as_bytes()));
        assert_eq!(ids3[2], format!("sha256:{want3}"));
    }

    #[test]
    fn whiteout_classification() {
        assert_eq!(classify_whiteout(Path::new("etc/passwd")), Whiteout::No);
        assert_eq!(
            classify_whiteout(Path::new("etc/.wh.passwd")),
            Whiteout::Delete(PathBuf::from("etc/passwd"))
        );
        assert_eq!(
            classify_whiteout(Path::new(".wh.tmp")),
            Whiteout::Delete(PathBuf::from("tmp"))
        );
        assert_eq!(
            classify_whiteout(Path::new("var/cache/.wh..wh..opq")),
            Whiteout::Opaque(PathBuf::from("var/cache"))
        );
        assert_eq!(
            clean_entry_path(Path::new("./a/b")),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(clean_entry_path(Path::new("/a")), Some(PathBuf::from("a")));
        assert_eq!(clean_entry_path(Path::new("../x")), None);
        assert_eq!(clean_entry_path(Path::new("./")), None);
    }

    fn tar_with(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, *d).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    b.append_data(&mut h, path, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn unpack_converts_whiteouts() {
        let dir = std::env::temp_dir().join(format!("berth-agent-wh-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let data = tar_with(&[
            ("etc/", None),
            ("etc/hello", Some(b"hi\n")),
            ("etc/.wh.gone", Some(b"")),
            ("cache/", None),
            ("cache/.wh..wh..opq", Some(b"")),
        ]);
        let digest = unpack_layer(&data[..], &dir).unwrap();
        assert_eq!(
            digest,
            format!("sha256:{}", hex::encode(Sha256::digest(&data)))
        );
        assert_eq!(std::fs::read(dir.join("etc/hello")).unwrap(), b"hi\n");
        let root = nix::unistd::geteuid().is_root();
        if root {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            let m = std::fs::symlink_metadata(dir.join("etc/gone")).unwrap();
            assert!(m.file_type().is_char_device());
            assert_eq!(m.rdev(), 0);
            let c = CString::new(dir.join("cache").as_os_str().as_bytes()).unwrap();
            let mut buf = [0u8; 4];
            // SAFETY: valid path and buffer.
            let n = unsafe {
                nix::libc::lgetxattr(
                    c.as_ptr(),
                    c"trusted.overlay.opaque".as_ptr(),
                    buf.as_mut_ptr() as *mut nix::libc::c_void,
                    buf.len(),
                )
            };
            assert_eq!(n, 1);
            assert_eq!(buf[0], b'y');
        }
        assert!(!dir.join("etc/.wh.gone").exists());
        assert!(!dir.join("cache/.wh..wh..opq").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
