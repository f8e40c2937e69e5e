//! Layer snapshots: each layer's diff unpacked (in overlayfs form) into
//! `snapshots/<chain id hex>/fs`, shared by every image whose layer stack begins the same way.
//! A snapshot is built in a temporary directory and renamed into place, so a crash leaves
//! nothing half-made.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};

use berth_core::digest::Digest;

use crate::unpack::unpack_layer;
use crate::AgentError;

/// Chain ids for a list of layer diff ids, per the OCI image spec:
/// `chain(0) = diff(0)`, `chain(n) = sha256(chain(n-1) + " " + diff(n))`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
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

    /// The `fs` directory of the snapshot for `chain_id` (`snapshots/<hex>/fs`; a [`Digest`]'s
    /// hex is safe in a path).
    pub fn fs_dir(&self, chain_id: &Digest) -> PathBuf {
        self.root.join(chain_id.hex()).join("fs")
    }

    pub fn exists(&self, chain_id: &Digest) -> bool {
        self.fs_dir(chain_id).is_dir()
    }

    fn lock_for(&self, chain_id: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(chain_id.to_string()).or_default().clone()
    }

    /// Makes sure the snapshot for `chain_id` exists, unpacking `blob` (a layer whose
    /// uncompressed digest must be `diff_id`) when it does not. Two callers for the same chain
    /// id wait for each other.
    pub async fn ensure(
        &self,
        chain_id: &Digest,
        diff_id: &Digest,
        blob: PathBuf,
        compression: Compression,
    ) -> Result<PathBuf, AgentError> {
        let fs = self.fs_dir(chain_id);
        if fs.is_dir() {
            return Ok(fs);
        }
        let lock = self.lock_for(chain_id);
        let _g = lock.lock().await;
        if fs.is_dir() {
            return Ok(fs);
        }
        let hex = chain_id.hex().to_string();
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

    use sha2::{Digest as _, Sha256};

    #[test]
    fn chain_id_computation() {
        let d = |s: String| Digest::parse(&s).unwrap();
        let a = d(format!("sha256:{}", "a".repeat(64)));
        let b = d(format!("sha256:{}", "b".repeat(64)));
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        let want = hex::encode(Sha256::digest(format!("{a} {b}").as_bytes()));
        assert_eq!(ids[1].to_string(), format!("sha256:{want}"));
        assert!(chain_ids(&[]).is_empty());
        // A known vector: the single-layer chain is the diff id itself; three layers chain.
        let c = d(format!("sha256:{}", "c".repeat(64)));
        let ids3 = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        let want3 = hex::encode(Sha256::digest(format!("{} {c}", ids[1]).as_bytes()));
        assert_eq!(ids3[2].to_string(), format!("sha256:{want3}"));
    }
}
