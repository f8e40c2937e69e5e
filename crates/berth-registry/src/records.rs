//! What the registry keeps in the state [`Store`]: kinds, keys and record shapes.
//!
//! | kind             | key                 | value              |
//! |------------------|---------------------|--------------------|
//! | `ecr.repository` | `<name>`            | [`RepositoryRecord`] |
//! | `ecr.image`      | `<name>@<digest>`   | [`ImageRecord`] (the manifest bytes are the blob `<digest>`) |
//! | `ecr.tag`        | `<name>:<tag>`      | [`TagRecord`]      |
//! | `ecr.blob`       | `<name>@<digest>`   | [`BlobLink`]       |
//! | `ecr.lifecycle`  | `<name>`            | [`crate::lifecycle::PolicyRecord`] |
//! | `ecr.lifecycle-preview` | `<name>`     | [`crate::lifecycle::PreviewRecord`] |
//! | `ecr.policy`     | `<name>`            | [`PolicyText`]     |
//!
//! `@` and `:` cannot occur in repository names, so `list(kind, "<name>@")` / `"<name>:"` selects
//! exactly one repository's records.

use berth_store::{Expect, Op, Store, StoreExt};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::RegistryError;

/// Repositories (ECR CreateRepository).
pub const KIND_REPOSITORY: &str = "ecr.repository";
/// Images: manifests pushed to a repository.
pub const KIND_IMAGE: &str = "ecr.image";
/// Tags pointing at images.
pub const KIND_TAG: &str = "ecr.tag";
/// Blobs (layers, configs) uploaded or mounted into a repository.
pub const KIND_BLOB: &str = "ecr.blob";
/// A repository's lifecycle policy ([`crate::lifecycle::PolicyRecord`]).
pub const KIND_LIFECYCLE: &str = "ecr.lifecycle";
/// A repository's last lifecycle policy preview ([`crate::lifecycle::PreviewRecord`]).
pub const KIND_LIFECYCLE_PREVIEW: &str = "ecr.lifecycle-preview";
/// A repository's repository policy ([`PolicyText`]).
pub const KIND_POLICY: &str = "ecr.policy";

/// One resource tag (`{"Key": .., "Value": ..}` on the wire).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResourceTag {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "Value", default)]
    pub value: String,
}

/// One `imageTagMutabilityExclusionFilters` entry (`filterType` is always `WILDCARD`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExclusionFilter {
    pub filter_type: String,
    pub filter: String,
}

/// A repository's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryRecord {
    pub name: String,
    /// Epoch seconds.
    pub created_at: f64,
    /// MUTABLE | IMMUTABLE | IMMUTABLE_WITH_EXCLUSION | MUTABLE_WITH_EXCLUSION
    pub image_tag_mutability: String,
    pub scan_on_push: bool,
    pub encryption_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key: Option<String>,
    #[serde(default)]
    pub tags: Vec<ResourceTag>,
    /// Tags matching one of these are the exception to `image_tag_mutability` (only with
    /// `IMMUTABLE_WITH_EXCLUSION` / `MUTABLE_WITH_EXCLUSION`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclusion_filters: Vec<ExclusionFilter>,
}

impl RepositoryRecord {
    /// Whether a push may not move `tag` to another digest: `IMMUTABLE` -> every tag;
    /// `MUTABLE` -> none; `IMMUTABLE_WITH_EXCLUSION` -> tags matching no filter;
    /// `MUTABLE_WITH_EXCLUSION` -> tags matching a filter.
    pub fn tag_immutable(&self, tag: &str) -> bool {
        let excluded = || {
            self.exclusion_filters
                .iter()
                .any(|f| crate::wildcard::matches(&f.filter, tag))
        };
        match self.image_tag_mutability.as_str() {
            "IMMUTABLE" => true,
            "IMMUTABLE_WITH_EXCLUSION" => !excluded(),
            "MUTABLE_WITH_EXCLUSION" => excluded(),
            _ => false,
        }
    }
}

/// An image (manifest or index) in a repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    pub digest: String,
    /// The Content-Type it was pushed with (served back unchanged).
    pub media_type: String,
    /// Length of the manifest bytes.
    pub manifest_size: u64,
    /// Manifest plus referenced blobs, as ECR's imageSizeInBytes.
    pub image_size: u64,
    /// Epoch seconds.
    pub pushed_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The `subject` digest (referrers API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// A tag's target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TagRecord {
    pub digest: String,
}

/// A repository's link to a global blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobLink {
    pub size: u64,
    /// Epoch seconds of the link (0 for links written before this field existed); garbage
    /// collection keeps unreferenced links younger than its grace period.
    #[serde(default)]
    pub linked_at: f64,
}

/// A repository policy (SetRepositoryPolicy), stored verbatim.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyText {
    pub policy_text: String,
}

/// Key of an image or blob link.
pub fn digest_key(repo: &str, digest: &Digest) -> String {
    format!("{repo}@{digest}")
}

/// Key of a tag.
pub fn tag_key(repo: &str, tag: &str) -> String {
    format!("{repo}:{tag}")
}

/// Typed access to the registry's records.
pub struct Records<'a>(pub &'a dyn Store);

impl Records<'_> {
    /// The repository, or `NameUnknown`.
    pub async fn repository(&self, name: &str) -> Result<(RepositoryRecord, i64), RegistryError> {
        self.0
            .get_json(KIND_REPOSITORY, name)
            .await?
            .ok_or_else(|| RegistryError::NameUnknown(name.to_string()))
    }

    /// All repositories, ordered by name.
    pub async fn repositories(&self) -> Result<Vec<RepositoryRecord>, RegistryError> {
        Ok(self.0.list_json(KIND_REPOSITORY, "").await?)
    }

    /// The image `digest` in `repo`, if any.
    pub async fn image(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<ImageRecord>, RegistryError> {
        Ok(self
            .0
            .get_json(KIND_IMAGE, &digest_key(repo, digest))
            .await?
            .map(|(v, _)| v))
    }

    /// All images of `repo`, ordered by digest.
    pub async fn images(&self, repo: &str) -> Result<Vec<ImageRecord>, RegistryError> {
        Ok(self.0.list_json(KIND_IMAGE, &format!("{repo}@")).await?)
    }

    /// The tag's digest and record revision, if any.
    pub async fn tag(&self, repo: &str, tag: &str) -> Result<Option<(String, i64)>, RegistryError> {
        Ok(self
            .0
            .get_json::<TagRecord>(KIND_TAG, &tag_key(repo, tag))
            .await?
            .map(|(t, rev)| (t.digest, rev)))
    }

    /// All `(tag, digest)` pairs of `repo`, ordered by tag.
    pub async fn tags(&self, repo: &str) -> Result<Vec<(String, String)>, RegistryError> {
        let prefix = format!("{repo}:");
        self.0
            .list(KIND_TAG, &prefix)
            .await?
            .into_iter()
            .map(|r| {
                let t: TagRecord = r.decode()?;
                Ok((r.key[prefix.len()..].to_string(), t.digest))
            })
            .collect()
    }

    /// The size of blob `digest` as linked into `repo`, if linked.
    pub async fn blob_link(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        Ok(self
            .0
            .get_json::<BlobLink>(KIND_BLOB, &digest_key(repo, digest))
            .await?
            .map(|(l, _)| l.size))
    }

    /// Every blob link of `repo` (`None`: of all repositories) as `(repo, digest, link, revision)`.
    pub async fn blob_links(
        &self,
        repo: Option<&str>,
    ) -> Result<Vec<(String, Digest, BlobLink, i64)>, RegistryError> {
        let prefix = repo.map(|r| format!("{r}@")).unwrap_or_default();
        let mut out = Vec::new();
        for r in self.0.list(KIND_BLOB, &prefix).await? {
            let Some((name, d)) = r.key.split_once('@') else {
                continue;
            };
            let Ok(d) = Digest::parse(d) else { continue };
            out.push((name.to_string(), d, r.decode()?, r.revision));
        }
        Ok(out)
    }

    /// The link record of blob `digest` in `repo` with its revision, if linked.
    pub async fn blob_link_record(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<(BlobLink, i64)>, RegistryError> {
        Ok(self
            .0
            .get_json(KIND_BLOB, &digest_key(repo, digest))
            .await?)
    }

    /// Links blob `digest` of `size` bytes into `repo`.
    pub async fn link_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), RegistryError> {
        Ok(self
            .0
            .put_json(
                KIND_BLOB,
                &digest_key(repo, digest),
                &BlobLink {
                    size,
                    linked_at: berth_core::epoch_now(),
                },
                Expect::Any,
            )
            .await?)
    }

    /// Ops deleting every record of `repo` (repository, images, tags, blob links, policies).
    pub async fn delete_repository_ops(&self, repo: &str) -> Result<Vec<Op>, RegistryError> {
        let mut ops = vec![Op::delete(KIND_REPOSITORY, repo, Expect::Any)];
        for kind in [KIND_LIFECYCLE, KIND_LIFECYCLE_PREVIEW, KIND_POLICY] {
            ops.push(Op::delete(kind, repo, Expect::Any));
        }
        for (kind, prefix) in [
            (KIND_IMAGE, format!("{repo}@")),
            (KIND_TAG, format!("{repo}:")),
            (KIND_BLOB, format!("{repo}@")),
            (crate::scan::KIND_SCAN, format!("{repo}@")),
        ] {
            for r in self.0.list(kind, &prefix).await? {
                ops.push(Op::delete(kind, &r.key, Expect::Any));
            }
        }
        Ok(ops)
    }
}
