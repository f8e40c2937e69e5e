//! The content-addressed blob store (DESIGN §4): one file per blob at
//! `<data_dir>/blobs/sha256/<hex>`, shared by all repositories. A file only appears there after its
//! digest was verified; it is written elsewhere, fsync'd and renamed into place, so a crash never
//! leaves a partial blob visible. Repositories link to blobs in the state store (see
//! [`crate::records`]).

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use crate::digest::Digest;
use crate::RegistryError;

/// Global blob directory (see the module docs).
#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    /// Opens (creating) `<data_dir>/blobs/sha256`; `tmp` is a directory on the same file system
    /// for staging writes (the uploads directory).
    pub fn open(data_dir: &Path, tmp: PathBuf) -> Result<Self, RegistryError> {
        let dir = data_dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir, tmp })
    }

    /// The file of `digest` (which may not exist).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
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
        let actual = Digest::of(bytes);
        if &actual != digest {
            return Err(RegistryError::DigestInvalid(format!(
                "content digest {actual} does not match {digest}"
            )));
        }
        if self.size(digest).await?.is_some() {
            return Ok(());
        }
        let staged = self.tmp.join(format!("put-{}", uuid::Uuid::new_v4()));
        let mut f = tokio::fs::File::create(&staged).await?;
        let res = async {
            f.write_all(bytes).await?;
            f.sync_all().await?;
            tokio::fs::rename(&staged, self.path(digest)).await
        }
        .await;
        if res.is_err() {
            let _ = tokio::fs::remove_file(&staged).await;
        }
        Ok(res?)
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
        if self.size(digest).await?.is_some() {
            tokio::fs::remove_file(staged).await?;
            return Ok(());
        }
        tokio::fs::rename(staged, self.path(digest)).await?;
        if let Ok(d) = tokio::fs::File::open(&self.dir).await {
            let _ = d.sync_all().await;
        }
        Ok(())
    }
}
