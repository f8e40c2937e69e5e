//! Layer snapshots: each layer's diff unpacked (in overlayfs form) into
//! `snapshots/<chain id hex>/fs`, shared by every image whose layer stack begins the same way.
//! A snapshot is built in a temporary directory and renamed into place, so a crash leaves
//! nothing half-made.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};

use sha2::{Digest, Sha256};

use crate::unpack::unpack_layer;
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
                        "layer unpacked to {got}, expected diff id {diff_id}"
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
}
