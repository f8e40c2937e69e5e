//! Copies images between an OCI image layout on disk (OCI image-layout spec: `oci-layout`,
//! `index.json`, `blobs/<alg>/<hex>`) and a registry, reporting bytes moved through
//! [`Progress`]. Used by the `berth push` / `berth pull` verbs.
//!
//! Every blob and manifest is verified against its digest while it moves. Indexes are copied
//! with all the manifests they reference. A registry that answers 401 is asked for a password
//! with ECR `GetAuthorizationToken` on `token_endpoint` ([`super::ecr_authorization`]) and the
//! request is retried with `Basic AWS:<password>`.

use std::path::{Path, PathBuf};

use berth_core::digest::Digest;
use futures_util::StreamExt;
use serde_json::Value;

use super::{blob_url, manifest_url, ClientError, MANIFEST_ACCEPT};

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

fn parse_digest(digest: &str) -> Result<Digest, ClientError> {
    Digest::parse(digest).map_err(|e| ClientError::Layout(e.to_string()))
}

fn short(digest: &Digest) -> String {
    digest.to_string().chars().take(19).collect()
}

/// The blobs and child manifests a manifest references: `(digest, size, is_manifest)`; a
/// malformed digest is an error.
fn references(manifest: &Value) -> Result<Vec<(Digest, u64, bool)>, ClientError> {
    let mut out = Vec::new();
    let entry = |d: &Value, is_manifest: bool| {
        d["digest"]
            .as_str()
            .map(|s| parse_digest(s).map(|s| (s, d["size"].as_u64().unwrap_or(0), is_manifest)))
    };
    if let Some(ms) = manifest["manifests"].as_array() {
        for e in ms.iter().filter_map(|m| entry(m, true)) {
            out.push(e?);
        }
    }
    if let Some(c) = entry(&manifest["config"], false) {
        out.push(c?);
    }
    if let Some(ls) = manifest["layers"].as_array() {
        for e in ls.iter().filter_map(|l| entry(l, false)) {
            out.push(e?);
        }
    }
    Ok(out)
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
        let header =
            super::ecr_authorization(&self.http, &self.token_endpoint, self.credentials.as_ref())
                .await
                .map_err(|e| match e {
                    ClientError::Registry(m) => ClientError::Registry(format!(
                "{m} (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY: `eval $(berth credentials)`)"
            )),
                    e => e,
                })?;
        *self.auth.lock().await = Some(header);
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
        let digest = parse_digest(
            chosen["digest"]
                .as_str()
                .ok_or_else(|| ClientError::Layout("manifest without digest".into()))?,
        )?;
        self.push_manifest(layout, repo, &digest, Some(dest_tag), progress)
            .await?;
        Ok(digest.to_string())
    }

    fn layout_blob(layout: &Path, digest: &Digest) -> PathBuf {
        layout
            .join("blobs")
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    async fn push_manifest(
        &self,
        layout: &Path,
        repo: &str,
        digest: &Digest,
        tag: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<(), ClientError> {
        let bytes = std::fs::read(Self::layout_blob(layout, digest))?;
        let got = Digest::of_with(digest.algorithm(), &bytes);
        if got != *digest {
            return Err(ClientError::DigestMismatch {
                what: "manifest",
                expected: digest.to_string(),
                got: got.to_string(),
            });
        }
        let manifest: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Layout(format!("manifest {digest}: {e}")))?;
        for (d, size, is_manifest) in references(&manifest)? {
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
        let url = manifest_url(&self.base, repo, tag.unwrap_or(&digest.to_string()));
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
        digest: &Digest,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<(), ClientError> {
        let what = format!("blob {}", short(digest));
        let head_url = blob_url(&self.base, repo, digest);
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
        let path = Self::layout_blob(layout, digest);
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
        std::fs::create_dir_all(layout.join("blobs"))?;
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
            "digest": digest.to_string(),
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        std::fs::write(
            &index_path,
            serde_json::to_vec_pretty(&index).unwrap_or_default(),
        )?;
        Ok(digest.to_string())
    }

    async fn pull_manifest(
        &self,
        repo: &str,
        reference: &str,
        layout: &Path,
        progress: &dyn Progress,
    ) -> Result<(Digest, String, u64), ClientError> {
        let url = manifest_url(&self.base, repo, reference);
        let resp = Self::check(
            self.send(|| self.http.get(&url).header("Accept", MANIFEST_ACCEPT))
                .await?,
            &format!("manifest {repo}:{reference}"),
        )
        .await?;
        let m = super::read_manifest(resp, reference).await?;
        let manifest: Value = serde_json::from_slice(&m.bytes)
            .map_err(|e| ClientError::Registry(format!("manifest is not JSON: {e}")))?;
        for (d, size, is_manifest) in references(&manifest)? {
            if is_manifest {
                Box::pin(self.pull_manifest(repo, &d.to_string(), layout, progress)).await?;
            } else {
                self.pull_blob(repo, &d, size, layout, progress).await?;
            }
        }
        let path = Self::layout_blob(layout, &m.digest);
        std::fs::create_dir_all(path.parent().unwrap_or(layout))?;
        super::write_atomic(&path, &m.bytes).await?;
        let media_type = manifest["mediaType"]
            .as_str()
            .map(str::to_string)
            .unwrap_or(m.content_type);
        Ok((m.digest, media_type, m.bytes.len() as u64))
    }

    async fn pull_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        layout: &Path,
        progress: &dyn Progress,
    ) -> Result<(), ClientError> {
        let what = format!("blob {}", short(digest));
        let path = Self::layout_blob(layout, digest);
        if path.exists() {
            progress.begin(&what, size, true);
            progress.end();
            return Ok(());
        }
        std::fs::create_dir_all(path.parent().unwrap_or(layout))?;
        let url = blob_url(&self.base, repo, digest);
        let resp = Self::check(self.send(|| self.http.get(&url)).await?, &what).await?;
        progress.begin(&what, resp.content_length().unwrap_or(size), false);
        let res = super::download_blob(resp, digest, &path, |n| progress.advance(n)).await;
        progress.end();
        res
    }
}
