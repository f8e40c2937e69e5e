//! berth-registry: the image registry (DESIGN §4) and berth's one OCI client.
//!
//! Without the default `server` feature only [`client`] and [`digest`] are built (the agent's
//! pull path uses them without depending on the state store).
//!
//! - [`client`]: the OCI distribution client: manifests and blobs fetched and verified by digest,
//!   registry authentication, and copies between an OCI image layout and a registry.
//! - [`digest`]: content digests ([`berth_core::digest::Digest`]).
//! - [`blobs`]: the global content-addressed blob store on disk (`blobs/sha256/<hex>`).
//! - [`uploads`]: blob upload sessions (`uploads/<id>`), verified before they become blobs.
//! - [`manifests`]: manifest parsing/validation (OCI manifest + index, Docker schema 2 + list).
//! - [`images`]: pushing, resolving and deleting manifests and tags in a repository.
//! - [`records`]: what lives in the state store (repositories, images, tags, blob links).
//! - [`oci`]: the OCI Distribution v1.1 HTTP API under `/v2/` and its error table.
//! - [`ecr`]: ECR awsJson1.1 operations and their AWS error table.
//! - [`auth`]: GetAuthorizationToken tokens and `Authorization: Basic` checks.
//! - [`lifecycle`]: lifecycle policy rules, their evaluation and application.
//! - [`scan`]: image scanning (dpkg/apk packages in the layers against an OSV database).
//! - [`gc`]: garbage collection of unreferenced blobs and abandoned uploads; periodic maintenance.
//! - [`wildcard`]: `*` patterns (tag mutability exclusions, lifecycle `tagPatternList`).

/// Items of the registry server: built with the `server` feature only.
macro_rules! server {
    ($($item:item)*) => { $(#[cfg(feature = "server")] $item)* };
}

pub mod client;
pub mod digest;

server! {
    pub mod auth;
    pub mod blobs;
    pub mod ecr;
    mod error;
    pub mod gc;
    pub mod images;
    pub mod lifecycle;
    pub mod manifests;
    pub mod names;
    pub mod oci;
    pub mod records;
    pub mod scan;
    pub mod uploads;
    pub mod wildcard;

    use std::path::Path;
    use std::sync::Arc;

    use berth_core::arn::Scope;
    use berth_store::Store;

    pub use error::RegistryError;
}

/// One registry: blob store, upload sessions and token authority under a data directory, plus
/// repository/image/tag records in the shared state [`Store`].
#[cfg(feature = "server")]
pub struct Registry {
    store: Arc<dyn Store>,
    scope: Scope,
    public_host: String,
    blobs: blobs::BlobStore,
    uploads: uploads::Uploads,
    auth: auth::TokenAuthority,
    auth_required: bool,
    scanner: Arc<scan::Scanner>,
}

#[cfg(feature = "server")]
impl Registry {
    /// Opens the registry rooted at `data_dir` (created if missing; holds `blobs/sha256/<hex>`,
    /// `uploads/<id>` and `auth.key`). `public_host` is the `host:port` clients reach the
    /// registry at; it prefixes `repositoryUri` (`<public_host>/<name>`) and forms the
    /// `proxyEndpoint` (`http://<public_host>`).
    pub fn open(
        data_dir: &Path,
        store: Arc<dyn Store>,
        scope: Scope,
        public_host: String,
    ) -> Result<Self, RegistryError> {
        std::fs::create_dir_all(data_dir)?;
        let uploads = uploads::Uploads::open(data_dir)?;
        let blobs = blobs::BlobStore::open(data_dir, uploads.dir())?;
        let auth = auth::TokenAuthority::open(data_dir)?;
        Ok(Self {
            store,
            scope,
            public_host,
            blobs,
            uploads,
            auth,
            auth_required: true,
            scanner: Arc::new(scan::Scanner::new(None)),
        })
    }

    /// Whether `/v2/` requires credentials (builder style, after [`Registry::open`]; on by
    /// default, as ECR): with `true`, every request without a valid `Authorization: Basic base64("AWS:<token>")` (a
    /// GetAuthorizationToken token, 12 h) answers 401 `UNAUTHORIZED` with `WWW-Authenticate:
    /// Basic realm="berth"`, so `docker/podman login` really checks the password. A blob
    /// GET/HEAD may instead carry `?token=<token>` (the URLs GetDownloadUrlForLayer returns).
    /// With `false` (`berth server --no-registry-auth`) requests without `Authorization` are
    /// served.
    pub fn with_auth_required(mut self, required: bool) -> Self {
        self.auth_required = required;
        self
    }

    /// The axum router serving the OCI distribution API at `/v2/...` (literal paths; merge it at
    /// the root). A `Basic` header must carry a valid GetAuthorizationToken token, else 401 with
    /// `WWW-Authenticate: Basic realm=...`; requests without `Authorization` are served only
    /// after [`Registry::with_auth_required`]`(false)`.
    pub fn router(self: Arc<Self>) -> axum::Router {
        oci::router(self)
    }

    /// Runs one ECR awsJson1.1 operation (`X-Amz-Target:
    /// AmazonEC2ContainerRegistry_V20150921.<operation>`) on a JSON request `body`, returning the
    /// JSON response body or the AWS error to send (see [`ecr`]); an unknown operation name is
    /// `UnknownOperationException`. The front serves ECR through [`ecr::EcrApi`].
    pub async fn handle_ecr(
        &self,
        operation: &str,
        body: &[u8],
    ) -> Result<serde_json::Value, berth_api::proto::AwsError> {
        use berth_api::operation::Operation as _;
        ecr::handle(
            self,
            berth_api::operation::EcrOperation::parse(operation)?,
            body,
        )
        .await
    }

    fn records(&self) -> records::Records<'_> {
        records::Records(self.store.as_ref())
    }
}

#[cfg(all(test, feature = "server"))]
mod testutil;
