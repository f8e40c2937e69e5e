//! Image pull over the OCI distribution API, with a content-addressed blob cache under
//! `<data_dir>/blobs/sha256/<hex>` (manifests, configs and layers, each verified by digest).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_core::digest::Digest;
use berth_registry::client::{self as oci, ClientError, Credentials, TokenCache};
use serde::Deserialize;

use crate::resolve::{resolve, InsecureRegistries, Resolved, Transport};
use crate::snapshot::{chain_ids, Compression, Snapshots};
use crate::AgentError;

#[derive(Debug, Clone, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: Digest,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

/// Either a manifest or an index (the fields that matter).
#[derive(Debug, Deserialize)]
struct AnyManifest {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// The parts of an image configuration the agent uses.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ImageConfig {
    #[serde(default)]
    pub config: Option<RunConfig>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct RunConfig {
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// A pulled image, ready to mount.
#[derive(Debug, Clone)]
pub struct Image {
    /// Digest of the (platform) manifest that is run.
    pub digest: String,
    pub config: ImageConfig,
    /// Snapshot `fs` directories, bottom layer first.
    pub layers: Vec<PathBuf>,
}

/// A pull failure, shaped as ECS reports it.
#[derive(Debug)]
pub struct PullError {
    pub message: String,
}

pub struct Puller {
    client: reqwest::Client,
    server_url: String,
    blobs: PathBuf,
    snapshots: Arc<Snapshots>,
    /// `Basic <base64 AWS:token>` for berth's own registry when it requires credentials
    /// (the default; not under `berth server --no-registry-auth`), from ECR GetAuthorizationToken.
    own_auth: tokio::sync::Mutex<Option<String>>,
    /// Signs `GetAuthorizationToken` (SigV4) when set.
    credentials: Option<berth_iam::AccessKey>,
    /// Registries that may be reached over plain HTTP besides loopback ones.
    insecure: InsecureRegistries,
    /// Per loopback / `--insecure-registry` registry: whether it turned out to speak plain
    /// HTTP, and when that was found (asked again after [`SCHEME_TTL`]).
    plain: std::sync::Mutex<std::collections::HashMap<String, (bool, std::time::Instant)>>,
    /// Tokens of other registries.
    tokens: TokenCache,
}

/// How long a registry's HTTPS-or-HTTP answer is kept.
const SCHEME_TTL: std::time::Duration = std::time::Duration::from_secs(600);

fn host_platform() -> (&'static str, Option<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        other => (other, None),
    }
}

enum FetchError {
    NotFound,
    Other(String),
    Client(ClientError),
    /// Layer `diff_id` was fetched but could not be unpacked (a malicious or corrupt layer).
    Extract {
        diff_id: String,
        reason: String,
    },
}

impl Puller {
    pub fn new(
        client: reqwest::Client,
        server_url: &str,
        data_dir: &Path,
        snapshots: Arc<Snapshots>,
        insecure: InsecureRegistries,
        credentials: Option<berth_iam::AccessKey>,
    ) -> Result<Puller, AgentError> {
        let blobs = data_dir.join("blobs");
        std::fs::create_dir_all(blobs.join("sha256"))?;
        Ok(Puller {
            client,
            server_url: server_url.trim_end_matches('/').to_string(),
            blobs,
            snapshots,
            own_auth: tokio::sync::Mutex::new(None),
            insecure,
            plain: Default::default(),
            tokens: TokenCache::default(),
            credentials,
        })
    }

    /// Asks the control plane for a registry password (ECR `GetAuthorizationToken`, the same
    /// call `aws ecr get-login-password` makes) and keeps it for berth's own registry.
    async fn refresh_own_auth(&self) -> Result<String, ClientError> {
        let header =
            oci::ecr_authorization(&self.client, &self.server_url, self.credentials.as_ref())
                .await?;
        *self.own_auth.lock().await = Some(header.clone());
        Ok(header)
    }

    /// `<data_dir>/blobs/<alg>/<hex>`.
    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    async fn read_cached(&self, digest: &Digest) -> Option<Vec<u8>> {
        tokio::fs::read(self.blob_path(digest))
            .await
            .ok()
            .filter(|b| digest.verifies(b))
    }

    /// Caches a verified manifest or config under its digest (content-addressed: an existing
    /// file already holds these bytes).
    async fn store_small(&self, digest: &Digest, data: &[u8]) -> Result<(), ClientError> {
        let p = self.blob_path(digest);
        if tokio::fs::try_exists(&p).await.unwrap_or(false) {
            return Ok(());
        }
        if let Some(dir) = p.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        oci::write_atomic(&p, data).await
    }

    /// Pulls `image` (as written): manifests, config, and the layers whose snapshots are
    /// missing. The error message is ECS's `CannotPullContainerError: ...`.
    /// `credentials_parameter` is the container's `repositoryCredentials.credentialsParameter`
    /// (a Secrets Manager ARN): berth has no Secrets Manager yet, so naming one fails with
    /// ECS's `ResourceInitializationError: unable to pull secrets or registry auth: ...` in the
    /// ECS agent's words (`asm fetching secret from the service for <arn>: <cause>`).
    pub async fn pull(
        &self,
        image: &str,
        credentials_parameter: Option<&str>,
    ) -> Result<Image, PullError> {
        let credentials: Option<Credentials> = match credentials_parameter {
            None => None,
            Some(arn) => {
                return Err(PullError {
                    message: format!(
                        "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: asm fetching secret from the service for {arn}: Secrets Manager is not available in berth yet, so repositoryCredentials cannot be used"
                    ),
                })
            }
        };
        let mut r = resolve(image, &self.server_url, &self.insecure).map_err(|e| PullError {
            message: format!("CannotPullContainerError: {e}"),
        })?;
        r.credentials = credentials;
        let fail = |what: String| {
            PullError {
            message: format!(
                "CannotPullContainerError: pull image manifest has been retried 1 time(s): failed to resolve ref {image}: {what}"
            ),
        }
        };
        if let Err(e) = self.choose_scheme(&mut r).await {
            return Err(fail(format!("{}: {e}", r.display)));
        }
        match self.pull_resolved(&r).await {
            Ok(img) => Ok(img),
            Err(FetchError::NotFound) => Err(fail(format!("{}: not found", r.display))),
            Err(FetchError::Other(e)) => Err(fail(format!("{}: {e}", r.display))),
            Err(FetchError::Client(e)) => Err(fail(format!("{}: {e}", r.display))),
            Err(FetchError::Extract { diff_id, reason }) => Err(PullError {
                message: format!(
                    "CannotPullContainerError: ref pull has been retried 1 time(s): failed to extract layer {diff_id}: {reason}"
                ),
            }),
        }
    }

    async fn get_manifest(
        &self,
        r: &Resolved,
        reference: &str,
    ) -> Result<(Vec<u8>, Digest), FetchError> {
        // A digest reference already in the cache costs no request.
        if let Ok(d) = Digest::parse(reference) {
            if let Some(b) = self.read_cached(&d).await {
                return Ok((b, d));
            }
        }
        let url = oci::manifest_url(&r.base_url, &r.repository, reference);
        let resp = self
            .send_retry(r, || {
                self.client.get(&url).header("Accept", oci::MANIFEST_ACCEPT)
            })
            .await?;
        let m = oci::read_manifest(resp, reference)
            .await
            .map_err(FetchError::Client)?;
        let _ = self.store_small(&m.digest, &m.bytes).await;
        Ok((m.bytes, m.digest))
    }

    /// For a registry that may speak plain HTTP (loopback, `--insecure-registry`): HTTPS
    /// first (`GET /v2/`); when that fails for another reason than the certificate and plain
    /// HTTP answers, the registry is pulled from over HTTP (remembered for [`SCHEME_TTL`]).
    async fn choose_scheme(&self, r: &mut Resolved) -> Result<(), String> {
        if r.transport != Transport::HttpsThenHttp {
            return Ok(());
        }
        let http_base = format!("http://{}", r.authority);
        let known = self.plain.lock().unwrap().get(&r.authority).copied();
        if let Some((plain, at)) = known {
            if at.elapsed() < SCHEME_TTL {
                if plain {
                    r.base_url = http_base;
                }
                return Ok(());
            }
        }
        let e = match self.client.get(format!("{}/v2/", r.base_url)).send().await {
            Ok(_) => {
                self.remember_scheme(&r.authority, false);
                return Ok(());
            }
            Err(e) => e,
        };
        let (kind, _) = crate::transport::classify(&e);
        let described = crate::transport::describe(&e, r.transport, &r.authority);
        if kind == crate::transport::Failure::Certificate {
            return Err(described);
        }
        match self.client.get(format!("{http_base}/v2/")).send().await {
            Ok(_) => {
                self.remember_scheme(&r.authority, true);
                r.base_url = http_base;
                Ok(())
            }
            Err(_) => Err(described),
        }
    }

    fn remember_scheme(&self, authority: &str, plain: bool) {
        let mut m = self.plain.lock().unwrap();
        if m.len() >= 1024 {
            m.clear();
        }
        m.insert(authority.to_string(), (plain, std::time::Instant::now()));
    }

    /// Sends a request, retrying once on a connection error or 5xx. Requests to berth's own
    /// registry carry its credentials once it has asked for them (401); requests to other
    /// registries answer their challenge (token auth, see [`registry_auth`]).
    async fn send_retry<F>(&self, r: &Resolved, make: F) -> Result<reqwest::Response, FetchError>
    where
        F: Fn() -> reqwest::RequestBuilder,
    {
        let own = r.transport == Transport::Own;
        let scope = format!("repository:{}:pull", r.repository);
        let mut auth = if own {
            None
        } else {
            self.tokens.get(&r.authority, &scope)
        };
        let mut last = String::new();
        let mut refreshed = false;
        let mut challenged = false;
        let mut attempt = 0;
        while attempt < 2 {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            if own {
                auth = self.own_auth.lock().await.clone();
            }
            let req = match &auth {
                Some(a) => make().header("Authorization", a),
                None => make(),
            };
            match req.send().await {
                Ok(resp) => {
                    let st = resp.status();
                    if st.is_success() {
                        return Ok(resp);
                    }
                    if st == reqwest::StatusCode::UNAUTHORIZED && own && !refreshed {
                        refreshed = true;
                        self.refresh_own_auth().await.map_err(FetchError::Client)?;
                        continue;
                    }
                    if st == reqwest::StatusCode::UNAUTHORIZED && !own && !challenged {
                        challenged = true;
                        let ch = oci::challenge(resp.headers());
                        let allowed = |u: &reqwest::Url| {
                            u.scheme() == "https"
                                || (u.scheme() == "http"
                                    && crate::transport::plain_http_allowed(
                                        &self.insecure,
                                        u.as_str(),
                                    ))
                        };
                        let h = self
                            .tokens
                            .authorize(
                                &self.client,
                                &r.authority,
                                &r.repository,
                                ch,
                                r.credentials.as_ref(),
                                allowed,
                                |e| crate::transport::describe(e, Transport::Https, &r.authority),
                            )
                            .await
                            .map_err(FetchError::Client)?;
                        auth = Some(h);
                        continue;
                    }
                    if !own
                        && (st == reqwest::StatusCode::UNAUTHORIZED
                            || st == reqwest::StatusCode::FORBIDDEN)
                    {
                        let body = oci::read_limited(resp, 64 << 10).await.unwrap_or_default();
                        return Err(FetchError::Other(format!(
                            "pull access denied, repository does not exist or may require authorization: server message: {}",
                            oci::server_message(&body)
                        )));
                    }
                    if st == reqwest::StatusCode::NOT_FOUND {
                        return Err(FetchError::NotFound);
                    }
                    let body = resp.text().await.unwrap_or_default();
                    last = format!(
                        "unexpected status {st}: {}",
                        body.chars().take(200).collect::<String>()
                    );
                    if st.is_client_error() {
                        return Err(FetchError::Other(last));
                    }
                }
                Err(e) => {
                    last = crate::transport::describe(&e, r.transport, &r.authority);
                    // A TLS failure does not go away by asking again.
                    if crate::transport::classify(&e).0 != crate::transport::Failure::Other {
                        return Err(FetchError::Other(last));
                    }
                }
            }
            attempt += 1;
        }
        Err(FetchError::Other(last))
    }

    async fn pull_resolved(&self, r: &Resolved) -> Result<Image, FetchError> {
        let (mut body, mut digest) = self.get_manifest(r, &r.reference).await?;
        let mut m: AnyManifest = serde_json::from_slice(&body)
            .map_err(|e| FetchError::Other(format!("invalid manifest: {e}")))?;
        if let Some(list) = &m.manifests {
            if m.config.is_none() {
                let (arch, variant) = host_platform();
                let pick = list
                    .iter()
                    .filter(|d| {
                        d.platform
                            .as_ref()
                            .is_some_and(|p| p.os == "linux" && p.architecture == arch)
                    })
                    .max_by_key(|d| {
                        let v = d.platform.as_ref().and_then(|p| p.variant.as_deref());
                        (v == variant) as u8
                    })
                    .ok_or_else(|| {
                        FetchError::Other(format!(
                            "no matching manifest for linux/{arch} in the manifest list entries"
                        ))
                    })?
                    .clone();
                let _ = &pick.media_type;
                (body, digest) = self.get_manifest(r, &pick.digest.to_string()).await?;
                m = serde_json::from_slice(&body)
                    .map_err(|e| FetchError::Other(format!("invalid manifest: {e}")))?;
            }
        }
        let _ = m.media_type;
        let config_desc = m
            .config
            .ok_or_else(|| FetchError::Other("manifest has no config".into()))?;
        let layers = m.layers.unwrap_or_default();
        let config_bytes = match self.read_cached(&config_desc.digest).await {
            Some(b) => b,
            None => {
                let url = oci::blob_url(&r.base_url, &r.repository, &config_desc.digest);
                let resp = self.send_retry(r, || self.client.get(&url)).await?;
                let b = oci::read_blob(resp, &config_desc.digest, "config")
                    .await
                    .map_err(FetchError::Client)?;
                let _ = self.store_small(&config_desc.digest, &b).await;
                b
            }
        };
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| FetchError::Other(format!("invalid image config: {e}")))?;
        let diff_ids = config
            .rootfs
            .as_ref()
            .map(|r| r.diff_ids.iter().map(|d| Digest::parse(d)).collect())
            .unwrap_or(Ok(Vec::new()))
            .map_err(|e| FetchError::Other(format!("invalid image config: diff id: {e}")))?;
        if diff_ids.len() != layers.len() {
            return Err(FetchError::Other(format!(
                "image config lists {} diff ids for {} layers",
                diff_ids.len(),
                layers.len()
            )));
        }
        let chains = chain_ids(&diff_ids);
        // Every missing layer is fetched and unpacked at once; each snapshot holds one diff.
        let jobs =
            layers
                .iter()
                .zip(diff_ids.iter())
                .zip(chains.iter())
                .map(|((l, d), c)| async move {
                    if self.snapshots.exists(c) {
                        return Ok(self.snapshots.fs_dir(c));
                    }
                    let comp = Compression::from_media_type(&l.media_type).ok_or_else(|| {
                        FetchError::Other(format!(
                            "unsupported layer media type {:?}",
                            l.media_type
                        ))
                    })?;
                    let blob = self.fetch_blob(r, &l.digest).await?;
                    self.snapshots
                        .ensure(c, d, blob, comp)
                        .await
                        .map_err(|e| FetchError::Extract {
                            diff_id: d.to_string(),
                            reason: e.to_string(),
                        })
                });
        let dirs = futures_util::future::join_all(jobs).await;
        let mut out = Vec::with_capacity(dirs.len());
        for d in dirs {
            out.push(d?);
        }
        Ok(Image {
            digest: digest.to_string(),
            config,
            layers: out,
        })
    }

    /// Downloads a blob into the cache (streaming, verifying the digest), unless present.
    async fn fetch_blob(&self, r: &Resolved, digest: &Digest) -> Result<PathBuf, FetchError> {
        let path = self.blob_path(digest);
        if tokio::fs::metadata(&path).await.is_ok() {
            return Ok(path);
        }
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| FetchError::Other(e.to_string()))?;
        }
        let url = oci::blob_url(&r.base_url, &r.repository, digest);
        let resp = self.send_retry(r, || self.client.get(&url)).await?;
        oci::download_blob(resp, digest, &path, |_| {})
            .await
            .map_err(FetchError::Client)?;
        Ok(path)
    }
}
