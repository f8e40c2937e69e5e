//! Images in a repository: pushing a manifest (validate, check references, store the bytes as a
//! blob, record image + tag atomically), resolving a tag or digest, deleting. Shared by the OCI
//! API and ECR operations.

use berth_store::{Expect, Op, StoreError, StoreExt};

use crate::digest::Digest;
use crate::manifests::{self, Kind};
use crate::names::valid_tag;
use crate::records::{self, ImageRecord, TagRecord, KIND_BLOB, KIND_IMAGE, KIND_TAG};
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
    /// Whether the repository held this image before the push.
    pub existed: bool,
}

impl Registry {
    /// Pushes manifest `bytes` (with the request's `content_type`) to `repo` under `reference`
    /// (a tag, or the digest the content must have). See [`Registry::push_manifest`].
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &Reference,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<Pushed, RegistryError> {
        match reference {
            Reference::Tag(t) => {
                self.push_manifest(repo, None, std::slice::from_ref(t), content_type, bytes)
                    .await
            }
            Reference::Digest(d) => {
                self.push_manifest(repo, Some(d), &[], content_type, bytes)
                    .await
            }
        }
    }

    /// Pushes manifest `bytes` to `repo`, pointing every tag of `tags` at it. The digest is
    /// sha256 unless `expected` names another algorithm; with `expected` the content must hash to
    /// it. Checks: repository exists (`NameUnknown`), size (`TooLarge`), digest (`DigestInvalid`),
    /// validity (`ManifestInvalid`), every referenced blob (image manifest, `ManifestBlobUnknown`)
    /// or manifest (index, `ReferencedImagesUnknown`) is in the repository, and no immutable tag
    /// moves (`TagImmutable`, per the repository's tag mutability and exclusion filters). The
    /// image, its tags and a re-write of every referenced link (so a concurrent delete of a link
    /// makes the commit fail instead of leaving a dangling reference) commit atomically. After
    /// the commit the repository's lifecycle policy, if any, is applied.
    pub async fn push_manifest(
        &self,
        repo: &str,
        expected: Option<&Digest>,
        tags: &[String],
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<Pushed, RegistryError> {
        let pushed = self
            .push_manifest_records(repo, expected, tags, content_type, bytes)
            .await?;
        if !pushed.existed {
            self.scan_on_push(repo, &pushed.digest).await;
        }
        if let Err(e) = self.apply_lifecycle(repo).await {
            tracing::warn!(repo, error = %e, "lifecycle policy after push failed");
        }
        Ok(pushed)
    }

    async fn push_manifest_records(
        &self,
        repo: &str,
        expected: Option<&Digest>,
        tags: &[String],
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<Pushed, RegistryError> {
        let (repository, _) = self.records().repository(repo).await?;
        if bytes.len() > manifests::MAX_MANIFEST_BYTES {
            return Err(RegistryError::TooLarge(format!(
                "manifest of {} bytes exceeds {}",
                bytes.len(),
                manifests::MAX_MANIFEST_BYTES
            )));
        }
        for t in tags {
            if !valid_tag(t) {
                return Err(RegistryError::TagInvalid(format!("invalid tag {t:?}")));
            }
        }
        let alg = expected.map_or(crate::digest::Algorithm::Sha256, Digest::algorithm);
        let digest = Digest::of_with(alg, bytes);
        if let Some(d) = expected {
            if d != &digest {
                return Err(RegistryError::DigestInvalid(format!(
                    "manifest digest is {digest}, not {d}"
                )));
            }
        }
        let m = manifests::parse(content_type, bytes)?;
        self.blobs.put_bytes(&digest, bytes).await?;
        // Retry a few times if a concurrent push moves a tag or a link between read and commit.
        for _ in 0..5 {
            let mut ops = Vec::new();
            let mut image_size = bytes.len() as u64;
            let mut guarded = std::collections::HashSet::new();
            for r in &m.references {
                image_size += r.size;
                if !guarded.insert(r.digest.clone()) {
                    continue;
                }
                match m.kind {
                    Kind::Image if r.foreign => {}
                    Kind::Image => {
                        let link = self.records().blob_link_record(repo, &r.digest).await?;
                        let size = match &link {
                            Some(_) => self.blobs.size(&r.digest).await?,
                            None => None,
                        };
                        let (Some((link, rev)), Some(size)) = (link, size) else {
                            return Err(RegistryError::ManifestBlobUnknown(r.digest.to_string()));
                        };
                        // A descriptor's size must be the blob's (OCI image spec, descriptor
                        // `size`): clients trust it to bound what they read.
                        if size != r.size {
                            return Err(RegistryError::ManifestInvalid(format!(
                                "descriptor of {} says {} bytes, the blob has {size}",
                                r.digest, r.size
                            )));
                        }
                        ops.push(Op::put(
                            KIND_BLOB,
                            &records::digest_key(repo, &r.digest),
                            &link,
                            Expect::Revision(rev),
                        )?);
                    }
                    Kind::Index => {
                        let key = records::digest_key(repo, &r.digest);
                        let Some((child, rev)) =
                            self.store.get_json::<ImageRecord>(KIND_IMAGE, &key).await?
                        else {
                            return Err(RegistryError::ReferencedImagesUnknown(
                                r.digest.to_string(),
                            ));
                        };
                        if child.manifest_size != r.size {
                            return Err(RegistryError::ManifestInvalid(format!(
                                "descriptor of {} says {} bytes, the manifest has {}",
                                r.digest, r.size, child.manifest_size
                            )));
                        }
                        ops.push(Op::put(KIND_IMAGE, &key, &child, Expect::Revision(rev))?);
                    }
                }
            }
            let key = records::digest_key(repo, &digest);
            let existing = self.store.get_json::<ImageRecord>(KIND_IMAGE, &key).await?;
            let existed = existing.is_some();
            let image = match existing {
                // Re-pushing keeps the original push time (ECR's imagePushedAt).
                Some((old, rev)) => {
                    ops.push(Op::put(KIND_IMAGE, &key, &old, Expect::Revision(rev))?);
                    old
                }
                None => {
                    let image = ImageRecord {
                        digest: digest.to_string(),
                        media_type: m.media_type.clone(),
                        manifest_size: bytes.len() as u64,
                        image_size,
                        pushed_at: berth_core::epoch_now(),
                        artifact_type: m.artifact_type.clone(),
                        subject: m.subject.as_ref().map(|s| s.to_string()),
                    };
                    ops.push(Op::put(KIND_IMAGE, &key, &image, Expect::Absent)?);
                    image
                }
            };
            for tag in tags {
                let expect = match self.records().tag(repo, tag).await? {
                    Some((old, _)) if old == image.digest => continue,
                    Some((old, _)) if repository.tag_immutable(tag) => {
                        return Err(RegistryError::TagImmutable(format!(
                            "The image tag '{tag}' already exists in the '{repo}' repository and cannot be overwritten because the tag is immutable (it points to {old})."
                        )))
                    }
                    Some((_, rev)) => Expect::Revision(rev),
                    None => Expect::Absent,
                };
                ops.push(Op::put(
                    KIND_TAG,
                    &records::tag_key(repo, tag),
                    &TagRecord {
                        digest: image.digest.clone(),
                    },
                    expect,
                )?);
            }
            match self.store.commit(ops).await {
                Ok(_) => {
                    return Ok(Pushed {
                        digest,
                        subject: m.subject,
                        existed,
                    })
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RegistryError::TagImmutable(
            "the image's tags or layers changed concurrently; retry the push".into(),
        ))
    }

    /// Resolves `reference` in `repo` to its image (`NameUnknown`, `ManifestUnknown`).
    pub async fn resolve(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> Result<ImageRecord, RegistryError> {
        self.records().repository(repo).await?;
        let unknown = || RegistryError::ManifestUnknown(format!("{repo}: {reference:?}"));
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => {
                let (d, _) = self.records().tag(repo, t).await?.ok_or_else(unknown)?;
                Digest::parse(&d)?
            }
        };
        self.records()
            .image(repo, &digest)
            .await?
            .ok_or_else(unknown)
    }

    /// The image `reference` of `repo` and its manifest bytes.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> Result<(ImageRecord, Vec<u8>), RegistryError> {
        let image = self.resolve(repo, reference).await?;
        let bytes = self
            .blobs
            .read(&Digest::parse(&image.digest)?)
            .await
            .map_err(|_| RegistryError::ManifestUnknown(image.digest.clone()))?;
        Ok((image, bytes))
    }

    /// The parsed manifest of image `image` (read from the blob store), `None` when its bytes are
    /// missing or no longer parse.
    pub fn parsed_manifest(&self, image: &ImageRecord) -> Option<manifests::Manifest> {
        let d = Digest::parse(&image.digest).ok()?;
        let bytes = std::fs::read(self.blobs.path(&d)).ok()?;
        manifests::parse(Some(&image.media_type), &bytes).ok()
    }

    /// The manifests the indexes of `repo` reference: child digest -> parent (index) digests.
    pub async fn index_parents(
        &self,
        repo: &str,
    ) -> Result<std::collections::HashMap<String, Vec<String>>, RegistryError> {
        let mut out: std::collections::HashMap<String, Vec<String>> = Default::default();
        for image in self.records().images(repo).await? {
            if manifests::kind_of(&image.media_type) == Some(Kind::Image) {
                continue;
            }
            let Some(m) = self.parsed_manifest(&image) else {
                continue;
            };
            if m.kind == Kind::Index {
                for r in m.references {
                    out.entry(r.digest.to_string())
                        .or_default()
                        .push(image.digest.clone());
                }
            }
        }
        Ok(out)
    }

    /// Deletes by tag (only the tag goes) or by digest (the image and every tag on it go).
    pub async fn delete_manifest(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> Result<(), RegistryError> {
        self.records().repository(repo).await?;
        let unknown = || RegistryError::ManifestUnknown(format!("{repo}: {reference:?}"));
        match reference {
            Reference::Tag(t) => {
                let (_, rev) = self.records().tag(repo, t).await?.ok_or_else(unknown)?;
                self.store
                    .commit(vec![Op::delete(
                        KIND_TAG,
                        &records::tag_key(repo, t),
                        Expect::Revision(rev),
                    )])
                    .await?;
            }
            Reference::Digest(d) => {
                self.records().image(repo, d).await?.ok_or_else(unknown)?;
                let mut ops = vec![
                    Op::delete(KIND_IMAGE, &records::digest_key(repo, d), Expect::Any),
                    crate::scan::delete_op(repo, d),
                ];
                for (tag, digest) in self.records().tags(repo).await? {
                    if digest == d.to_string() {
                        ops.push(Op::delete(
                            KIND_TAG,
                            &records::tag_key(repo, &tag),
                            Expect::Any,
                        ));
                    }
                }
                self.store.commit(ops).await?;
            }
        }
        Ok(())
    }
}
