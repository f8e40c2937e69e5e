//! Images in a repository: pushing a manifest (validate, check references, store the bytes as a
//! blob, record image + tag atomically), resolving a tag or digest, deleting. Shared by the OCI
//! API and ECR operations.

use berth_store::{Expect, Op, StoreError};

use crate::digest::Digest;
use crate::manifests::{self, Kind};
use crate::names::valid_tag;
use crate::records::{self, ImageRecord, TagRecord, KIND_IMAGE, KIND_TAG};
use crate::{Registry, RegistryError};

/// A manifest reference from a URL: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    /// Parses a reference: anything with `:` must be a valid digest (`DigestInvalid`), otherwise
    /// a valid tag (`TagInvalid`).
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        if s.contains(':') {
            Ok(Self::Digest(Digest::parse(s)?))
        } else if valid_tag(s) {
            Ok(Self::Tag(s.to_string()))
        } else {
            Err(RegistryError::TagInvalid(format!("invalid tag {s:?}")))
        }
    }
}

/// The outcome of a manifest push.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

impl Registry {
    /// Pushes manifest `bytes` (with the request's `content_type`) to `repo` under `reference`.
    /// Checks: repository exists (`NameUnknown`), size (`TooLarge`), digest references match the
    /// content (`DigestInvalid`), the manifest is valid (`ManifestInvalid`), every referenced
    /// blob (image) or manifest (index) is in the repository (`ManifestBlobUnknown`), and an
    /// IMMUTABLE repository's tag does not move (`TagInvalid`).
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<Pushed, RegistryError> {
        let (repository, _) = self.records().repository(repo)?;
        if bytes.len() > manifests::MAX_MANIFEST_BYTES {
            return Err(RegistryError::TooLarge(format!(
                "manifest of {} bytes exceeds {}",
                bytes.len(),
                manifests::MAX_MANIFEST_BYTES
            )));
        }
        let digest = Digest::of(bytes);
        if let Reference::Digest(d) = reference {
            if d != &digest {
                return Err(RegistryError::DigestInvalid(format!(
                    "manifest digest is {digest}, not {d}"
                )));
            }
        }
        let m = manifests::parse(content_type, bytes)?;
        let mut image_size = bytes.len() as u64;
        for r in &m.references {
            let present = match m.kind {
                Kind::Image if r.foreign => true,
                Kind::Image => {
                    self.records().blob_link(repo, &r.digest)?.is_some()
                        && self.blobs.size(&r.digest).await?.is_some()
                }
                Kind::Index => self.records().image(repo, &r.digest)?.is_some(),
            };
            if !present {
                return Err(RegistryError::ManifestBlobUnknown(r.digest.to_string()));
            }
            image_size += r.size;
        }
        self.blobs.put_bytes(&digest, bytes).await?;
        let image = ImageRecord {
            digest: digest.to_string(),
            media_type: m.media_type.clone(),
            manifest_size: bytes.len() as u64,
            image_size,
            pushed_at: berth_core::epoch_now(),
            artifact_type: m.artifact_type.clone(),
            subject: m.subject.as_ref().map(|s| s.to_string()),
        };
        // Retry a few times if a concurrent push moves the same tag between read and commit.
        for _ in 0..5 {
            let mut ops = vec![Op::put(
                KIND_IMAGE,
                &records::digest_key(repo, &digest),
                &image,
                Expect::Any,
            )?];
            if let Reference::Tag(tag) = reference {
                let expect = match self.records().tag(repo, tag)? {
                    Some((old, _)) if old == image.digest => None,
                    Some((old, _)) if repository.tags_immutable() => {
                        return Err(RegistryError::TagInvalid(format!(
                            "The image tag '{tag}' already exists in the '{repo}' repository and cannot be overwritten because the repository is immutable (it points to {old})."
                        )))
                    }
                    Some((_, rev)) => Some(Expect::Revision(rev)),
                    None => Some(Expect::Absent),
                };
                if let Some(expect) = expect {
                    ops.push(Op::put(
                        KIND_TAG,
                        &records::tag_key(repo, tag),
                        &TagRecord {
                            digest: image.digest.clone(),
                        },
                        expect,
                    )?);
                }
            }
            match self.store.commit(ops) {
                Ok(()) => {
                    return Ok(Pushed {
                        digest,
                        subject: m.subject,
                    })
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RegistryError::TagInvalid(
            "tag changed concurrently; retry".into(),
        ))
    }

    /// Resolves `reference` in `repo` to its image (`NameUnknown`, `ManifestUnknown`).
    pub fn resolve(&self, repo: &str, reference: &Reference) -> Result<ImageRecord, RegistryError> {
        self.records().repository(repo)?;
        let unknown = || RegistryError::ManifestUnknown(format!("{repo}: {reference:?}"));
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => {
                let (d, _) = self.records().tag(repo, t)?.ok_or_else(unknown)?;
                Digest::parse(&d)?
            }
        };
        self.records().image(repo, &digest)?.ok_or_else(unknown)
    }

    /// The image `reference` of `repo` and its manifest bytes.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> Result<(ImageRecord, Vec<u8>), RegistryError> {
        let image = self.resolve(repo, reference)?;
        let bytes = self
            .blobs
            .read(&Digest::parse(&image.digest)?)
            .await
            .map_err(|_| RegistryError::ManifestUnknown(image.digest.clone()))?;
        Ok((image, bytes))
    }

    /// Deletes by tag (only the tag goes) or by digest (the image and every tag on it go).
    pub fn delete_manifest(&self, repo: &str, reference: &Reference) -> Result<(), RegistryError> {
        self.records().repository(repo)?;
        let unknown = || RegistryError::ManifestUnknown(format!("{repo}: {reference:?}"));
        match reference {
            Reference::Tag(t) => {
                let (_, rev) = self.records().tag(repo, t)?.ok_or_else(unknown)?;
                self.store.commit(vec![Op::delete(
                    KIND_TAG,
                    &records::tag_key(repo, t),
                    Expect::Revision(rev),
                )])?;
            }
            Reference::Digest(d) => {
                self.records().image(repo, d)?.ok_or_else(unknown)?;
                let mut ops = vec![Op::delete(
                    KIND_IMAGE,
                    &records::digest_key(repo, d),
                    Expect::Any,
                )];
                for (tag, digest) in self.records().tags(repo)? {
                    if digest == d.to_string() {
                        ops.push(Op::delete(
                            KIND_TAG,
                            &records::tag_key(repo, &tag),
                            Expect::Any,
                        ));
                    }
                }
                self.store.commit(ops)?;
            }
        }
        Ok(())
    }
}
