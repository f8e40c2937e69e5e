//! Blob upload sessions (OCI distribution spec "Pushing blobs": POST, chunked PATCH, PUT).
//!
//! A session is the file `<data_dir>/uploads/<id>` holding the bytes received so far, plus
//! `<id>.repo` naming the repository it was opened for (so sessions survive a restart). The
//! running sha256 state is kept in memory while chunks arrive in order; after a restart it is
//! recomputed from the file. Nothing becomes visible until [`Uploads::finish`] has verified the
//! digest and moved the file into the [`BlobStore`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use axum::body::Body;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::blobs::BlobStore;
use crate::digest::{Algorithm, Digest, Hasher};
use crate::RegistryError;

#[derive(Clone)]
struct Session {
    repo: String,
    size: u64,
    /// sha256 over the first `size` bytes, when known (a sha512 digest is computed at the end).
    hasher: Option<Hasher>,
}

/// The upload sessions of one registry (see the module docs).
pub struct Uploads {
    dir: PathBuf,
    idle: Mutex<HashMap<String, Session>>,
    busy: Mutex<HashSet<String>>,
}

/// Exclusive use of one session while a request works on it; returned to the idle map on drop.
pub struct Lease<'a> {
    uploads: &'a Uploads,
    id: String,
    session: Option<Session>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            lock(&self.uploads.idle).insert(self.id.clone(), s);
        }
        lock(&self.uploads.busy).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Uploads {
    /// Opens (creating) `<data_dir>/uploads`.
    pub fn open(data_dir: &Path) -> Result<Self, RegistryError> {
        let dir = data_dir.join("uploads");
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            idle: Mutex::new(HashMap::new()),
            busy: Mutex::new(HashSet::new()),
        })
    }

    /// The directory sessions live in (also the blob store's staging directory).
    pub fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    fn data_path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn repo_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.repo"))
    }

    /// Opens a new empty session for `repo`; returns its id.
    pub async fn start(&self, repo: &str) -> Result<String, RegistryError> {
        let id = uuid::Uuid::new_v4().to_string();
        tokio::fs::write(self.data_path(&id), b"").await?;
        tokio::fs::write(self.repo_path(&id), repo.as_bytes()).await?;
        lock(&self.idle).insert(
            id.clone(),
            Session {
                repo: repo.to_string(),
                size: 0,
                hasher: Some(Algorithm::Sha256.hasher()),
            },
        );
        Ok(id)
    }

    /// Takes exclusive use of session `id` of `repo`. Unknown id (or another repository's) gives
    /// `UploadUnknown`; a session in use by another request gives `RangeInvalid` (HTTP 416).
    pub async fn lease(&self, id: &str, repo: &str) -> Result<Lease<'_>, RegistryError> {
        let unknown = || RegistryError::UploadUnknown(id.to_string());
        if !valid_id(id) {
            return Err(unknown());
        }
        if !lock(&self.busy).insert(id.to_string()) {
            return Err(RegistryError::RangeInvalid(format!(
                "upload {id} is in use"
            )));
        }
        let mut lease = Lease {
            uploads: self,
            id: id.to_string(),
            session: None,
        };
        let cached = lock(&self.idle).remove(id);
        let session = match cached {
            Some(s) => s,
            None => {
                // Not in memory: a session from before a restart, or none at all.
                let repo = match tokio::fs::read_to_string(self.repo_path(id)).await {
                    Ok(r) => r,
                    Err(_) => return Err(unknown()),
                };
                let size = tokio::fs::metadata(self.data_path(id))
                    .await
                    .map_err(|_| unknown())?
                    .len();
                Session {
                    repo,
                    size,
                    hasher: None,
                }
            }
        };
        let matches = session.repo == repo;
        lease.session = Some(session);
        if !matches {
            return Err(unknown());
        }
        Ok(lease)
    }

    /// Bytes received so far by session `id` of `repo`.
    pub async fn size(&self, id: &str, repo: &str) -> Result<u64, RegistryError> {
        let lease = self.lease(id, repo).await?;
        Ok(lease.size())
    }

    /// Drops session `id` of `repo` and its bytes.
    pub async fn cancel(&self, id: &str, repo: &str) -> Result<(), RegistryError> {
        let mut lease = self.lease(id, repo).await?;
        lease.session = None;
        self.remove_files(id).await;
        Ok(())
    }

    /// Removes sessions (and stray staging files) not written to for at least `max_idle` and not
    /// in use by a request; returns how many sessions were removed. Safe while uploads run: a
    /// session is only removed while this holds its lease.
    pub async fn sweep(&self, max_idle: std::time::Duration) -> Result<usize, RegistryError> {
        let mut removed = 0;
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        let mut names = Vec::new();
        while let Some(e) = entries.next_entry().await? {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        let idle = |path: PathBuf| async move {
            match tokio::fs::metadata(&path).await.and_then(|m| m.modified()) {
                Ok(t) => {
                    std::time::SystemTime::now()
                        .duration_since(t)
                        .unwrap_or_default()
                        >= max_idle
                }
                Err(_) => true,
            }
        };
        for name in &names {
            if let Some(id) = name.strip_suffix(".repo") {
                if !valid_id(id) || !idle(self.data_path(id)).await {
                    continue;
                }
                let repo = tokio::fs::read_to_string(self.repo_path(id))
                    .await
                    .unwrap_or_default();
                let Ok(mut lease) = self.lease(id, &repo).await else {
                    continue;
                };
                lease.session = None;
                self.remove_files(id).await;
                removed += 1;
            } else if !names.contains(&format!("{name}.repo"))
                && !lock(&self.busy).contains(name.as_str())
                && idle(self.dir.join(name)).await
            {
                // Staging files of interrupted writes, or data without its `.repo`.
                let _ = tokio::fs::remove_file(self.dir.join(name)).await;
            }
        }
        Ok(removed)
    }

    async fn remove_files(&self, id: &str) {
        let _ = tokio::fs::remove_file(self.data_path(id)).await;
        let _ = tokio::fs::remove_file(self.repo_path(id)).await;
    }
}

impl Lease<'_> {
    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Bytes received so far.
    pub fn size(&self) -> u64 {
        self.session.as_ref().map_or(0, |s| s.size)
    }

    fn session(&mut self) -> &mut Session {
        self.session.as_mut().expect("lease holds its session")
    }

    /// Appends `body` to the session. With `range = Some((start, end))` (from `Content-Range`,
    /// inclusive) the chunk must start exactly at the current size (else `RangeInvalid`, HTTP 416)
    /// and be exactly `end - start + 1` bytes long (else `UploadInvalid`, and the chunk is
    /// discarded). Returns the new size.
    pub async fn append(
        &mut self,
        range: Option<(u64, u64)>,
        body: Body,
    ) -> Result<u64, RegistryError> {
        let start = self.size();
        if let Some((s, e)) = range {
            if s != start || e < s {
                return Err(RegistryError::RangeInvalid(format!(
                    "chunk {s}-{e} does not continue the upload at offset {start}"
                )));
            }
        }
        let path = self.uploads.data_path(&self.id);
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .await?;
        // The file may hold bytes past `size` from an interrupted request: write at `size`.
        file.set_len(start).await?;
        let mut file = tokio::io::BufWriter::with_capacity(256 * 1024, {
            use tokio::io::AsyncSeekExt;
            file.seek(std::io::SeekFrom::Start(start)).await?;
            file
        });
        let mut stream = body.into_data_stream();
        let mut written = 0u64;
        let mut result: Result<(), RegistryError> = Ok(());
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    result = Err(RegistryError::UploadInvalid(format!("reading body: {e}")));
                    break;
                }
            };
            if let Err(e) = file.write_all(&chunk).await {
                result = Err(e.into());
                break;
            }
            if let Some(h) = self.session().hasher.as_mut() {
                h.update(&chunk);
            }
            written += chunk.len() as u64;
        }
        if result.is_ok() {
            result = file.flush().await.map_err(Into::into);
        }
        if result.is_ok() {
            if let Some((s, e)) = range {
                if written != e - s + 1 {
                    result = Err(RegistryError::UploadInvalid(format!(
                        "Content-Range {s}-{e} announces {} bytes but the body had {written}",
                        e - s + 1
                    )));
                }
            }
        }
        if let Err(e) = result {
            // Discard the partial chunk: the session stays at `start`.
            let file = file.into_inner();
            file.set_len(start).await?;
            self.session().hasher = None;
            return Err(e);
        }
        let s = self.session();
        s.size = start + written;
        Ok(s.size)
    }

    /// Completes the upload: appends `body` (the optional last chunk, placed by `range` as in
    /// [`Lease::append`]: a chunk that does not continue the upload gives `RangeInvalid`, HTTP
    /// 416, and keeps the session as it was, per the OCI distribution spec's "If the final chunk
    /// is uploaded out of order, the registry MUST respond with a 416"), verifies the content
    /// hashes to `digest`, and moves it into `blobs`. On a mismatch the session is dropped and
    /// `DigestInvalid` returned; nothing becomes visible. Returns the blob size.
    pub async fn finish(
        mut self,
        range: Option<(u64, u64)>,
        digest: &Digest,
        body: Body,
        blobs: &BlobStore,
    ) -> Result<u64, RegistryError> {
        self.append(range, body).await?;
        let path = self.uploads.data_path(&self.id);
        let size = self.size();
        let hasher = match self.session().hasher.take() {
            Some(h) if h.algorithm() == digest.algorithm() => h,
            _ => rehash(&path, size, digest.algorithm()).await?,
        };
        let actual = hasher.finish();
        // From here the session is consumed whatever happens.
        self.session = None;
        if &actual != digest {
            self.uploads.remove_files(&self.id).await;
            return Err(RegistryError::DigestInvalid(format!(
                "uploaded content has digest {actual}, not {digest}"
            )));
        }
        let res = blobs.adopt(&path, digest).await;
        self.uploads.remove_files(&self.id).await;
        res.map(|_| size)
    }
}

async fn rehash(path: &Path, size: u64, alg: Algorithm) -> Result<Hasher, RegistryError> {
    let mut f = tokio::fs::File::open(path).await?.take(size);
    let mut h = alg.hasher();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h)
}
