//! An OCI Distribution client (spec v1.1, "Pulling" and "Pushing" workflows) that copies images
//! between an OCI image layout on disk (OCI image-layout spec: `oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`) and a registry, reporting bytes moved through [`Progress`]. Used by the
//! `berth push` / `berth pull` verbs.
//!
//! Every blob and manifest is verified against its sha256 digest while it moves. Indexes are
//! copied with all the manifests they reference. A registry that answers 401 is asked for a
//! password with ECR `GetAuthorizationToken` on `token_endpoint` (what `aws ecr
//! get-login-password` does) and the request is retried with `Basic AWS:<password>`.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

/// Media types a client accepts for manifests.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Errors of a push or pull; the message says what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The local OCI layout is missing or malformed.
    #[error("OCI layout {0}")]
    Layout(String),
    /// The registry answered something unexpected.
    #[error("registry: {0}")]
    Registry(String),
    /// A blob or manifest did not match its digest.
    #[error("digest mismatch for {0}")]
    DigestMismatch(String),
    /// Reading or writing local files failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Receives progress: one `begin` per blob, `advance` as bytes move, `end` when it is done.
pub trait Progress: Send + Sync {
    /// A transfer of `total` bytes named `what` (e.g. `layer sha256:ab12…`) starts; `skipped`
    /// is true when nothing has to move (the registry already has it).
    fn begin(&self, what: &str, total: u64, skipped: bool);
    /// `n` more bytes moved.
    fn advance(&self, n: u64);
    /// The current transfer finished.
    fn end(&self);
}

/// A client for one registry.
pub struct Client {
    http: reqwest::Client,
    /// `http://host:port` of the registry.
    base: String,
    /// Where to ask for a password on 401 (berth's awsJson endpoint).
    token_endpoint: String,
    auth: tokio::sync::Mutex<Option<String>>,
    /// Signs `GetAuthorizationToken` (SigV4) when set.
    credentials: Option<berth_iam::AccessKey>,
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn hex_of(digest: &str) -> Result<&str, ClientError> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| ClientError::Layout(format!("unsupported digest {digest}")))
}

fn short(digest: &str) -> String {
    digest.chars().take(19).collect()
}

/// The blobs and child manifests a manifest references: `(digest, size, is_manifest)`.
fn references(manifest: &Value) -> Vec<(String, u64, bool)> {
    let mut out = Vec::new();
    let entry = |d: &Value, is_manifest: bool| {
        d["digest"]
            .as_str()
            .map(|s| (s.to_string(), d["size"].as_u64().unwrap_or(0), is_manifest))
    };
    if let Some(ms) = manifest["manifests"].as_array() {
        out.extend(ms.iter().filter_map(|m| entry(m, true)));
    }
    if let Some(c) = entry(&manifest["config"], false) {
        out.push(c);
    }
    if let Some(ls) = manifest["layers"].as_array() {
        out.extend(ls.iter().filter_map(|l| entry(l, false)));
    }
    out
}

impl Client {
    /// A client for the registry at `base` (`http://host:port`), asking `token_endpoint` for a
    /// password when the registry wants one.
    pub fn new(base: &str, token_endpoint: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            token_endpoint: token_endpoint.trim_end_matches('/').to_string(),
            auth: tokio::sync::Mutex::new(None),
            credentials: None,
        }
    }

    /// Signs the `GetAuthorizationToken` call with `key` (berth's APIs require SigV4).
    pub fn with_credentials(mut self, key: Option<berth_iam::AccessKey>) -> Client {
        self.credentials = key;
        self
    }

    async fn login(&self) -> Result<(), ClientError> {
        const TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";
        const CT: &str = "application/x-amz-json-1.1";
        let mut req = self
            .http
            .post(format!("{}/", self.token_endpoint))
            .header("X-Amz-Target", TARGET)
            .header("Content-Type", CT)
            .body("{}");
        if let Some(key) = &self.credentials {
            for (k, v) in berth_iam::sign_json_call(key, &self.token_endpoint, "ecr", TARGET, b"{}")
            {
                req = req.header(k, v);
            }
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ClientError::Registry(format!("GetAuthorizationToken: {e}")))?;
        if !resp.status().is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(ClientError::Registry(format!(
                "GetAuthorizationToken: {body} (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY: `eval $(berth credentials)`)"
            )));
        }
        let v: Value = resp
            .json()
            .await
            .map_err(|e| ClientError::Registry(format!("GetAuthorizationToken: {e}")))?;
        let token = v["authorizationData"][0]["authorizationToken"]
            .as_str()
            .ok_or_else(|| ClientError::Registry("no authorization token".into()))?;
        *self.auth.lock().await = Some(format!("Basic {token}"));
        Ok(())
    }

    /// Sends `make()`, logging in and retrying once on 401.
    async fn send(
        &self,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        for attempt in 0..2 {
            let req = match self.auth.lock().await.clone() {
                Some(a) => make().header("Authorization", a),
                None => make(),
            };
            let resp = req
                .send()
                .await
                .map_err(|e| ClientError::Registry(e.to_string()))?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                self.login().await?;
                continue;
            }
            return Ok(resp);
        }
        unreachable!("the loop returns on its second pass")
    }

    async fn check(resp: reqwest::Response, what: &str) -> Result<reqwest::Response, ClientError> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let st = resp.status();
        let body = resp.text().await.unwrap_or_default();
        Err(ClientError::Registry(format!(
            "{what}: HTTP {st}: {}",
            body.chars().take(300).collect::<String>()
        )))
    }

    /// Pushes the image tagged `tag` in the OCI layout at `layout` (or its only image when
    /// `tag` is `None`) to `repo:dest_tag`. Returns the manifest digest.
    pub async fn push(
        &self,
        layout: &Path,
        tag: Option<&str>,
        repo: &str,
        dest_tag: &str,
        progress: &dyn Progress,
    ) -> Result<String, ClientError> {
        let index: Value = serde_json::from_slice(
            &std::fs::read(layout.join("index.json"))
                .map_err(|e| ClientError::Layout(format!("{}: {e}", layout.display())))?,
        )
        .map_err(|e| ClientError::Layout(format!("index.json: {e}")))?;
        let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
        let chosen = match tag {
            Some(t) => manifests.iter().find(|m| {
                m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(t)
            }),
            None if manifests.len() == 1 => manifests.first(),
            None => None,
        }
        .ok_or_else(|| {
            ClientError::Layout(format!(
                "{}: no image {} (give one of its tags)",
                layout.display(),
                tag.unwrap_or("(only one expected)")
            ))
        })?;
        let digest = chosen["digest"]
            .as_str()
            .ok_or_else(|| ClientError::Layout("manifest without digest".into()))?
            .to_string();
        self.push_manifest(layout, repo, &digest, Some(dest_tag), progress)
            .await?;
        Ok(digest)
    }

    fn layout_blob(layout: &Path, digest: &str) -> Result<PathBuf, ClientError> {
        Ok(layout.join("blobs").join("sha256").join(hex_of(digest)?))
    }

    async fn push_manifest(
        &self,
        layout: &Path,
        repo: &str,
        digest: &str,
        tag: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<(), ClientError> {
        let bytes = std::fs::read(Self::layout_blob(layout, digest)?)?;
        if format!("sha256:{}", sha256_hex(&bytes)) != digest {
            return Err(ClientError::DigestMismatch(digest.to_string()));
        }
        let manifest: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Layout(format!("manifest {digest}: {e}")))?;
        for (d, size, is_manifest) in references(&manifest) {
            if is_manifest {
                Box::pin(self.push_manifest(layout, repo, &d, None, progress)).await?;
            } else {
                self.push_blob(layout, repo, &d, size, progress).await?;
            }
        }
        let media_type = manifest["mediaType"]
            .as_str()
            .unwrap_or("application/vnd.oci.image.manifest.v1+json")
            .to_string();
        let url = format!(
            "{}/v2/{repo}/manifests/{}",
            self.base,
            tag.unwrap_or(digest)
        );
        let resp = self
            .send(|| {
                self.http
                    .put(&url)
                    .header("Content-Type", &media_type)
                    .body(bytes.clone())
            })
            .await?;
        Self::check(resp, &format!("PUT manifest {}", short(digest))).await?;
        Ok(())
    }

    async fn push_blob(
        &self,
        layout: &Path,
        repo: &str,
        digest: &str,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<(), ClientError> {
        let what = format!("blob {}", short(digest));
        let head_url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let head = self.send(|| self.http.head(&head_url)).await?;
        if head.status().is_success() {
            progress.begin(&what, size, true);
            progress.end();
            return Ok(());
        }
        let start_url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let resp = Self::check(
            self.send(|| self.http.post(&start_url)).await?,
            "starting an upload",
        )
        .await?;
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| ClientError::Registry("upload without Location".into()))?
            .to_string();
        let mut put_url = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location
        };
        put_url.push(if put_url.contains('?') { '&' } else { '?' });
        put_url.push_str(&format!("digest={digest}"));
        let path = Self::layout_blob(layout, digest)?;
        let len = std::fs::metadata(&path)?.len();
        progress.begin(&what, len, false);
        // Stream the file, counting bytes as they go out.
        let file = tokio::fs::File::open(&path).await?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
        // The progress sink is borrowed; move counts through a channel-free shared counter.
        let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let c2 = counter.clone();
        let body = reqwest::Body::wrap_stream(stream.inspect(move |r| {
            if let Ok(b) = r {
                c2.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }));
        let put = self
            .http
            .put(&put_url)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", len)
            .body(body);
        let put = match self.auth.lock().await.clone() {
            Some(a) => put.header("Authorization", a),
            None => put,
        };
        let mut fut = Box::pin(put.send());
        let mut reported = 0;
        let resp = loop {
            tokio::select! {
                r = &mut fut => break r.map_err(|e| ClientError::Registry(e.to_string()))?,
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                    let now = counter.load(std::sync::atomic::Ordering::Relaxed);
                    progress.advance(now - reported);
                    reported = now;
                }
            }
        };
        progress.advance(counter.load(std::sync::atomic::Ordering::Relaxed) - reported);
        progress.end();
        Self::check(resp, &format!("uploading {what}")).await?;
        Ok(())
    }

    /// Pulls `repo:reference` (tag or digest) into the OCI layout at `layout` (created if
    /// missing), tagging it `tag` in its `index.json`. Returns the manifest digest.
    pub async fn pull(
        &self,
        repo: &str,
        reference: &str,
        layout: &Path,
        tag: &str,
        progress: &dyn Progress,
    ) -> Result<String, ClientError> {
        std::fs::create_dir_all(layout.join("blobs").join("sha256"))?;
        let (digest, media_type, size) = self
            .pull_manifest(repo, reference, layout, progress)
            .await?;
        std::fs::write(
            layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        let index_path = layout.join("index.json");
        let mut index: Value = std::fs::read(&index_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| serde_json::json!({"schemaVersion": 2, "manifests": []}));
        let list = index["manifests"]
            .as_array_mut()
            .ok_or_else(|| ClientError::Layout(format!("{}: bad index.json", layout.display())))?;
        list.retain(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"].as_str() != Some(tag)
        });
        list.push(serde_json::json!({
            "mediaType": media_type,
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        std::fs::write(
            &index_path,
            serde_json::to_vec_pretty(&index).unwrap_or_default(),
        )?;
        Ok(digest)
    }

    async fn pull_manifest(
        &self,
        repo: &str,
        reference: &str,
        layout: &Path,
        progress: &dyn Progress,
    ) -> Result<(String, String, u64), ClientError> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let resp = Self::check(
            self.send(|| self.http.get(&url).header("Accept", ACCEPT))
                .await?,
            &format!("manifest {repo}:{reference}"),
        )
        .await?;
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|c| c.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Registry(e.to_string()))?;
        let digest = format!("sha256:{}", sha256_hex(&bytes));
        if reference.starts_with("sha256:") && reference != digest {
            return Err(ClientError::DigestMismatch(reference.to_string()));
        }
        let manifest: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Registry(format!("manifest is not JSON: {e}")))?;
        for (d, size, is_manifest) in references(&manifest) {
            if is_manifest {
                Box::pin(self.pull_manifest(repo, &d, layout, progress)).await?;
            } else {
                self.pull_blob(repo, &d, size, layout, progress).await?;
            }
        }
        std::fs::write(Self::layout_blob(layout, &digest)?, &bytes)?;
        let media_type = manifest["mediaType"]
            .as_str()
            .map(str::to_string)
            .unwrap_or(content_type);
        Ok((digest, media_type, bytes.len() as u64))
    }

    async fn pull_blob(
        &self,
        repo: &str,
        digest: &str,
        size: u64,
        layout: &Path,
        progress: &dyn Progress,
    ) -> Result<(), ClientError> {
        let what = format!("blob {}", short(digest));
        let path = Self::layout_blob(layout, digest)?;
        if path.exists() {
            progress.begin(&what, size, true);
            progress.end();
            return Ok(());
        }
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let resp = Self::check(self.send(|| self.http.get(&url)).await?, &what).await?;
        progress.begin(&what, resp.content_length().unwrap_or(size), false);
        let tmp = path.with_extension("partial");
        let mut out = tokio::fs::File::create(&tmp).await?;
        let mut hasher = Sha256::new();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ClientError::Registry(e.to_string()))?;
            hasher.update(&chunk);
            out.write_all(&chunk).await?;
            progress.advance(chunk.len() as u64);
        }
        out.sync_all().await?;
        progress.end();
        if format!("sha256:{}", hex::encode(hasher.finalize())) != digest {
            let _ = std::fs::remove_file(&tmp);
            return Err(ClientError::DigestMismatch(digest.to_string()));
        }
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }
}
