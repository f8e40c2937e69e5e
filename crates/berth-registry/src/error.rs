//! [`RegistryError`]: every failure of the registry, by kind. The OCI status/code table lives in
//! [`crate::oci`], the AWS `__type` table in [`crate::ecr`].

use berth_store::StoreError;

/// Errors of the registry (blob store, uploads, manifests, ECR operations).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The repository name does not match the ECR/OCI name grammar.
    #[error("invalid repository name: {0}")]
    NameInvalid(String),
    /// No repository of that name (ECR `RepositoryNotFoundException`, OCI `NAME_UNKNOWN`).
    #[error("repository {0} not found")]
    NameUnknown(String),
    /// CreateRepository on an existing name.
    #[error("repository {0} already exists")]
    RepositoryAlreadyExists(String),
    /// DeleteRepository without `force` on a repository that still holds images.
    #[error("repository {0} is not empty")]
    RepositoryNotEmpty(String),
    /// A malformed digest or a digest that does not match the content.
    #[error("digest invalid: {0}")]
    DigestInvalid(String),
    /// The blob is not known in this repository.
    #[error("blob unknown: {0}")]
    BlobUnknown(String),
    /// The upload session does not exist (or belongs to another repository).
    #[error("upload unknown: {0}")]
    UploadUnknown(String),
    /// The upload request is malformed (bad `Content-Range`, length mismatch).
    #[error("upload invalid: {0}")]
    UploadInvalid(String),
    /// A chunk that does not start where the upload ends (HTTP 416).
    #[error("range not satisfiable: {0}")]
    RangeInvalid(String),
    /// The manifest is not valid JSON of a known shape.
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    /// The manifest references a blob or manifest the repository does not hold.
    #[error("manifest references unknown blob: {0}")]
    ManifestBlobUnknown(String),
    /// No manifest for that tag or digest.
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    /// The content is larger than the registry accepts (HTTP 413).
    #[error("too large: {0}")]
    TooLarge(String),
    /// A malformed tag.
    #[error("tag invalid: {0}")]
    TagInvalid(String),
    /// A push would move a tag the repository's tag mutability settings make immutable (ECR
    /// `ImageTagAlreadyExistsException`, OCI `TAG_INVALID`).
    #[error("{0}")]
    TagImmutable(String),
    /// PutImage of an image (and tag) the repository already holds (ECR
    /// `ImageAlreadyExistsException`).
    #[error("{0}")]
    ImageAlreadyExists(String),
    /// An index references manifests the repository does not hold (ECR
    /// `ReferencedImagesNotFoundException`, OCI `MANIFEST_BLOB_UNKNOWN`).
    #[error("manifest references unknown manifest: {0}")]
    ReferencedImagesUnknown(String),
    /// GetDownloadUrlForLayer / PutImage: a layer is not in the repository (ECR
    /// `LayersNotFoundException`).
    #[error("{0}")]
    LayersNotFound(String),
    /// UploadLayerPart: a part that does not continue the upload (ECR
    /// `InvalidLayerPartException`).
    #[error("{0}")]
    InvalidLayerPart(String),
    /// CompleteLayerUpload: the content does not hash to the given digest (ECR
    /// `InvalidLayerException`).
    #[error("{0}")]
    InvalidLayer(String),
    /// CompleteLayerUpload of a layer the repository already holds (ECR
    /// `LayerAlreadyExistsException`).
    #[error("{0}")]
    LayerAlreadyExists(String),
    /// CompleteLayerUpload of an upload that received no bytes (ECR `EmptyUploadException`).
    #[error("{0}")]
    EmptyUpload(String),
    /// No lifecycle policy on the repository (ECR `LifecyclePolicyNotFoundException`).
    #[error("{0}")]
    LifecyclePolicyNotFound(String),
    /// No lifecycle policy preview on the repository (ECR
    /// `LifecyclePolicyPreviewNotFoundException`).
    #[error("{0}")]
    LifecyclePreviewNotFound(String),
    /// No repository policy on the repository (ECR `RepositoryPolicyNotFoundException`).
    #[error("{0}")]
    RepositoryPolicyNotFound(String),
    /// Missing, invalid or expired credentials.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// A request parameter is invalid (ECR `InvalidParameterException`).
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// Resource tags are invalid (ECR `InvalidTagParameterException`).
    #[error("invalid tag parameter: {0}")]
    InvalidTagParameter(String),
    /// More than 50 resource tags (ECR `TooManyTagsException`).
    #[error("too many tags: {0}")]
    TooManyTags(String),
    /// StartImageScan of something that cannot be scanned, such as an image index (ECR
    /// `UnsupportedImageTypeException`).
    #[error("{0}")]
    UnsupportedImageType(String),
    /// DescribeImageScanFindings of an image never scanned (ECR `ScanNotFoundException`).
    #[error("{0}")]
    ScanNotFound(String),
    /// The state store failed (or a write lost a race).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Disk IO failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<berth_core::digest::DigestError> for RegistryError {
    fn from(e: berth_core::digest::DigestError) -> Self {
        RegistryError::DigestInvalid(e.to_string())
    }
}
