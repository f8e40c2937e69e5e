//! The content-addressed blob store (DESIGN §4): one file per blob at
//! `<data_dir>/blobs/<alg>/<hex>` (`sha256` or `sha512`), shared by all repositories. A file only
//! appears there after its digest was verified; it is written elsewhere, fsync'd and renamed into
//! place, so a crash never leaves a partial blob visible. Repositories link to blobs in the state
//! store (see [`crate::records`]).
//!
//! Garbage collection ([`crate::gc`]) deletes unreferenced files whose modification time is older
//! than a grace period. Every write path ([`BlobStore::put_bytes`], [`BlobStore::adopt`],
//! [`BlobStore::touch`]) sets the file's mtime to now under the same lock the sweep holds while it
//! re-checks a file's age and unlinks it, so a blob about to be linked is never swept.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;

use crate::digest::{Algorithm, Digest};
use crate::RegistryError;

/// Global blob directory (see the module docs).
#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
    /// Held while a writer refreshes or places a file and while the sweep re-checks and unlinks.
    sweep: Mutex<()>,
}

fn lock(m: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets `path`'s modification time to now; `Ok(false)` when the file does not exist.
fn touch_file(path: &Path) -> std::io::Result<bool> {
    match std::fs::File::options().write(true).open(path) {
        Ok(f) => {
            f.set_modified(SystemTime::now())?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

impl BlobStore {
    /// Opens (creating) `<data_dir>/blobs/{sha256,sha512}`; `tmp` is a directory on the same
    /// file system for staging writes (the uploads directory).
    pub fn open(data_dir: &Path, tmp: PathBuf) -> Result<Self, RegistryError> {
        let dir = data_dir.join("blobs");
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            std::fs::create_dir_all(dir.join(alg.name()))?;
        }
        Ok(Self {
            dir,
            tmp,
            sweep: Mutex::new(()),
        })
    }

    /// The file of `digest` (which may not exist).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.algorithm().name()).join(digest.hex())
    }

    /// Marks an existing blob as just used (mtime = now) so a concurrent sweep keeps it; `false`
    /// when the blob is absent. Call before linking an existing blob into a repository.
    pub fn touch(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let _g = lock(&self.sweep);
        Ok(touch_file(&self.path(digest))?)
    }

    /// Every stored blob with its size and modification time (for garbage collection).
    pub fn list(&self) -> Result<Vec<(Digest, u64, SystemTime)>, RegistryError> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.dir.join(alg.name());
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(d) = Digest::parse(&format!("{}:{name}", alg.name())) else {
                    continue;
                };
                let Ok(meta) = entry.metadata() else { continue };
                out.push((d, meta.len(), meta.modified()?));
            }
        }
        Ok(out)
    }

    /// Deletes blob `digest` if its mtime is older than `now - grace` (checked under the sweep
    /// lock); returns the bytes freed, 0 when it was kept or absent.
    pub fn remove_if_idle(&self, digest: &Digest, grace: Duration) -> Result<u64, RegistryError> {
        let path = self.path(digest);
        let _g = lock(&self.sweep);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let age = SystemTime::now()
            .duration_since(meta.modified()?)
            .unwrap_or_default();
        if age < grace {
            return Ok(0);
        }
        std::fs::remove_file(&path)?;
        Ok(meta.len())
    }

    /// The size of a stored blob, `None` when absent.
    pub async fn size(&self, digest: &Digest) -> Result<Option<u64>, RegistryError> {
        match tokio::fs::metadata(self.path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a whole blob (manifests); `BlobUnknown` when absent.
    pub async fn read(&self, digest: &Digest) -> Result<Vec<u8>, RegistryError> {
        match tokio::fs::read(self.path(digest)).await {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(RegistryError::BlobUnknown(digest.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Stores `bytes` as a blob after checking they hash to `digest`.
    pub async fn put_bytes(&self, digest: &Digest, bytes: &[u8]) -> Result<(), RegistryError> {
        let actual = Digest::of_with(digest.algorithm(), bytes);
        if &actual != digest {
            return Err(RegistryError::DigestInvalid(format!(
                "content digest {actual} does not match {digest}"
            )));
        }
        if self.touch(digest)? {
            return Ok(());
        }
        let staged = self.tmp.join(format!("put-{}", uuid::Uuid::new_v4()));
        let mut f = tokio::fs::File::create(&staged).await?;
        let res = async {
            f.write_all(bytes).await?;
            f.sync_all().await?;
            self.place(&staged, digest)
        }
        .await;
        if res.is_err() {
            let _ = tokio::fs::remove_file(&staged).await;
        }
        res
    }

    /// Renames the fsync'd `staged` file to `digest`'s path with mtime now, or drops it when the
    /// blob already exists (refreshing that one's mtime instead), under the sweep lock.
    fn place(&self, staged: &Path, digest: &Digest) -> Result<(), RegistryError> {
        let _g = lock(&self.sweep);
        let path = self.path(digest);
        if touch_file(&path)? {
            std::fs::remove_file(staged)?;
            return Ok(());
        }
        touch_file(staged)?;
        std::fs::rename(staged, &path)?;
        Ok(())
    }

    /// Moves an already verified file (an upload) into place under `digest`, fsync'ing it and
    /// the directory first. An existing blob wins; the staged file is then removed.
    pub async fn adopt(&self, staged: &Path, digest: &Digest) -> Result<(), RegistryError> {
        let f = tokio::fs::OpenOptions::new()
            .write(true)
            .open(staged)
            .await?;
        f.sync_all().await?;
        drop(f);
        self.place(staged, digest)?;
        if let Ok(d) = tokio::fs::File::open(self.dir.join(digest.algorithm().name())).await {
            let _ = d.sync_all().await;
        }
        Ok(())
    }
}
