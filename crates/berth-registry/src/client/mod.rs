//! berth's one OCI Distribution client (distribution spec v1.1, "Pulling" and "Pushing"):
//! what every copy of an image between a registry and this host shares.
//!
//! - manifests fetched with the [`MANIFEST_ACCEPT`] media types and verified against the digest
//!   they were asked by ([`read_manifest`]), blobs verified while they stream to disk
//!   ([`download_blob`]) or into memory ([`read_blob`]);
//! - registry authentication: berth's own registry answers 401 and wants `Basic AWS:<token>`
//!   from ECR `GetAuthorizationToken` ([`ecr_authorization`]); other registries' `Bearer` /
//!   `Basic` challenges are answered by [`TokenCache`];
//! - one error type, [`ClientError`].
//!
//! The agent pulls images by reference with these (its blob cache, TLS policy and retries are
//! its own); [`Client`] copies images between an OCI image layout and a registry for `berth
//! push` / `berth pull`.

mod auth;
mod layout;

use std::path::{Path, PathBuf};

use berth_core::digest::Digest;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

pub use auth::{challenge, read_limited, server_message, Challenge, Credentials, TokenCache};
pub use layout::{Client, Progress};

/// OCI image manifest media type.
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest v2 schema 2 media type.
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The `Accept` header of a manifest request: the four media types above.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Errors of the OCI client; the message says what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The local OCI layout is missing or malformed.
    #[error("OCI layout {0}")]
    Layout(String),
    /// The registry answered something unexpected (a status, a body that is not a manifest).
    #[error("registry: {0}")]
    Registry(String),
    /// An answer's body could not be read to its end (`reading blob <digest>: <cause>`).
    #[error("{0}")]
    Transfer(String),
    /// Content (`what`: manifest, config, blob) did not hash to the digest it was asked by.
    #[error("{what} digest mismatch: got {got}, expected {expected}")]
    DigestMismatch {
        what: &'static str,
        expected: String,
        got: String,
    },
    /// A registry's authentication challenge could not be answered (containerd's wording
    /// follows: `failed to fetch anonymous token: ...`).
    #[error("failed to authorize: {0}")]
    Auth(String),
    /// Reading or writing local files failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// `<base>/v2/<repository>/manifests/<reference>` (reference: a tag or a digest).
pub fn manifest_url(base: &str, repository: &str, reference: &str) -> String {
    format!("{base}/v2/{repository}/manifests/{reference}")
}

/// `<base>/v2/<repository>/blobs/<digest>`.
pub fn blob_url(base: &str, repository: &str, digest: &Digest) -> String {
    format!("{base}/v2/{repository}/blobs/{digest}")
}

/// A manifest (or index) as a registry served it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The bytes as served (their digest is the manifest's identity).
    pub bytes: Vec<u8>,
    /// The digest of `bytes`: the algorithm of the digest asked by, else sha256.
    pub digest: Digest,
    /// The `Content-Type` of the answer (empty when absent).
    pub content_type: String,
}

/// The digest a reference pins: `None` for a tag, the digest for `<alg>:<hex>`; a reference
/// with `:` that is not a valid digest is [`ClientError::Registry`].
fn pinned(reference: &str) -> Result<Option<Digest>, ClientError> {
    if !reference.contains(':') {
        return Ok(None);
    }
    Digest::parse(reference)
        .map(Some)
        .map_err(|e| ClientError::Registry(e.to_string()))
}

/// Reads a successful manifest answer to the request for `reference` (tag or digest): its
/// bytes, digest and content type. Asked by digest, the bytes must hash to it
/// ([`ClientError::DigestMismatch`]).
pub async fn read_manifest(
    resp: reqwest::Response,
    reference: &str,
) -> Result<FetchedManifest, ClientError> {
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| ClientError::Transfer(format!("reading manifest: {e}")))?;
    let pin = pinned(reference)?;
    let alg = pin
        .as_ref()
        .map_or(berth_core::digest::Algorithm::Sha256, Digest::algorithm);
    let digest = Digest::of_with(alg, &bytes);
    if let Some(want) = pin.filter(|w| *w != digest) {
        return Err(ClientError::DigestMismatch {
            what: "manifest",
            expected: want.to_string(),
            got: digest.to_string(),
        });
    }
    Ok(FetchedManifest {
        bytes: bytes.to_vec(),
        digest,
        content_type,
    })
}

/// Reads a small blob (an image config) into memory, verified against `digest`; `what` names
/// it in errors.
pub async fn read_blob(
    resp: reqwest::Response,
    digest: &Digest,
    what: &'static str,
) -> Result<Vec<u8>, ClientError> {
    let b = resp
        .bytes()
        .await
        .map_err(|e| ClientError::Transfer(format!("reading {what}: {e}")))?;
    let got = Digest::of_with(digest.algorithm(), &b);
    if got != *digest {
        return Err(ClientError::DigestMismatch {
            what,
            expected: digest.to_string(),
            got: got.to_string(),
        });
    }
    Ok(b.to_vec())
}

/// A temporary sibling of `path`, unique within this host (process id and a counter), for
/// content that is renamed into place once verified.
pub fn temp_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    path.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes small verified content (a manifest, a config) to `path` through a temporary file
/// and a rename, so `path` never holds part of it.
pub async fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ClientError> {
    let tmp = temp_path(path);
    let res = async {
        tokio::fs::write(&tmp, data).await?;
        tokio::fs::rename(&tmp, path).await
    }
    .await;
    if res.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    Ok(res?)
}

/// Streams a successful blob answer into `dest`, hashing as it goes; `dest` appears (by
/// rename) only when the content hashes to `digest`, and nothing is left behind otherwise.
/// `on_chunk` is told the size of each chunk written (progress).
pub async fn download_blob(
    resp: reqwest::Response,
    digest: &Digest,
    dest: &Path,
    mut on_chunk: impl FnMut(u64),
) -> Result<(), ClientError> {
    let tmp = temp_path(dest);
    let res = async {
        let mut f = tokio::fs::File::create(&tmp).await?;
        let mut h = digest.algorithm().hasher();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ClientError::Transfer(format!("reading blob {digest}: {e}")))?;
            h.update(&chunk);
            f.write_all(&chunk).await?;
            on_chunk(chunk.len() as u64);
        }
        f.flush().await?;
        let got = h.finish();
        if got != *digest {
            return Err(ClientError::DigestMismatch {
                what: "blob",
                expected: digest.to_string(),
                got: got.to_string(),
            });
        }
        tokio::fs::rename(&tmp, dest).await?;
        Ok(())
    }
    .await;
    if res.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    res
}

/// Asks berth's awsJson endpoint at `endpoint` for a registry password (ECR
/// `GetAuthorizationToken`, what `aws ecr get-login-password` does), signing the call with
/// `key` (SigV4) when given. Returns the `Authorization` value for `/v2/`:
/// `Basic <base64 AWS:token>`. A refusal is [`ClientError::Registry`] with the answer's body.
pub async fn ecr_authorization(
    http: &reqwest::Client,
    endpoint: &str,
    key: Option<&berth_iam::AccessKey>,
) -> Result<String, ClientError> {
    const TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";
    const CT: &str = "application/x-amz-json-1.1";
    let endpoint = endpoint.trim_end_matches('/');
    let fail = |e: String| ClientError::Registry(format!("GetAuthorizationToken: {e}"));
    let mut req = http
        .post(format!("{endpoint}/"))
        .header("X-Amz-Target", TARGET)
        .header("Content-Type", CT)
        .body("{}");
    if let Some(key) = key {
        for (k, v) in berth_iam::sign_json_call(key, endpoint, "ecr", TARGET, b"{}") {
            req = req.header(k, v);
        }
    }
    let resp = req.send().await.map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        let st = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(fail(format!(
            "HTTP {st}: {}",
            body.chars().take(300).collect::<String>()
        )));
    }
    let v: serde_json::Value = resp.json().await.map_err(|e| fail(e.to_string()))?;
    let token = v["authorizationData"][0]["authorizationToken"]
        .as_str()
        .ok_or_else(|| fail("the answer has no authorization token".into()))?;
    Ok(format!("Basic {token}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_pin_digests() {
        assert!(pinned("latest").unwrap().is_none());
        let d = Digest::of(b"x");
        assert_eq!(pinned(&d.to_string()).unwrap(), Some(d));
        assert!(pinned("sha256:abcd").is_err());
        assert!(MANIFEST_ACCEPT.contains(MT_OCI_MANIFEST));
        assert!(MANIFEST_ACCEPT.contains(MT_OCI_INDEX));
        assert!(MANIFEST_ACCEPT.contains(MT_DOCKER_MANIFEST));
        assert!(MANIFEST_ACCEPT.contains(MT_DOCKER_LIST));
    }

    #[test]
    fn mismatch_messages_name_both_digests() {
        let e = ClientError::DigestMismatch {
            what: "blob",
            expected: "sha256:a".into(),
            got: "sha256:b".into(),
        };
        assert_eq!(
            e.to_string(),
            "blob digest mismatch: got sha256:b, expected sha256:a"
        );
        assert_eq!(
            ClientError::Auth("x".into()).to_string(),
            "failed to authorize: x"
        );
    }
}
