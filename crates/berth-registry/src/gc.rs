//! Garbage collection of blobs and abandoned upload sessions, safe while pushes run.
//!
//! Three passes, each deciding with a pure function and then deleting carefully:
//! 1. **Links.** A repository's blob link that no image manifest of that repository references
//!    ([`stale_links`]) and that is older than the grace period is deleted under its revision; a
//!    manifest push re-writes the links it references in the same commit as the image
//!    ([`Registry::push_manifest`]), so a link a push is about to use is either kept (the delete
//!    conflicts) or the push fails cleanly with `MANIFEST_BLOB_UNKNOWN`. Repositories holding a
//!    manifest whose bytes cannot be read are skipped entirely.
//! 2. **Blob files.** A file in `blobs/<alg>/` that no image and no link references
//!    ([`referenced_blobs`]) is deleted if its mtime is older than the grace period, re-checked
//!    under the blob store's sweep lock ([`crate::blobs::BlobStore::remove_if_idle`]); every path
//!    that is about to link a blob refreshes its mtime under that lock first.
//! 3. **Upload sessions** idle for longer than `upload_max_idle` and not in use by a request, and
//!    stray staging files ([`crate::uploads::Uploads::sweep`]).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use berth_store::{Expect, Op, StoreError};

use crate::digest::Digest;
use crate::manifests::Kind;
use crate::records::{BlobLink, KIND_BLOB};
use crate::{Registry, RegistryError};

/// Garbage collection settings.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Unreferenced links and blob files younger than this are kept (default 1 h): a push
    /// uploads its blobs before the manifest that references them.
    pub grace: Duration,
    /// Upload sessions not written to for this long are abandoned (default 24 h).
    pub upload_max_idle: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(3600),
            upload_max_idle: Duration::from_secs(24 * 3600),
        }
    }
}

/// What one collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub links_removed: usize,
    pub blobs_removed: usize,
    /// Bytes of blob files removed.
    pub bytes_freed: u64,
    pub uploads_removed: usize,
}

/// The blob digests that records reference: every image's manifest and every blob link.
pub fn referenced_blobs<'a>(
    image_digests: impl IntoIterator<Item = &'a str>,
    link_digests: impl IntoIterator<Item = &'a Digest>,
) -> HashSet<String> {
    image_digests
        .into_iter()
        .map(str::to_string)
        .chain(link_digests.into_iter().map(Digest::to_string))
        .collect()
}

/// The indexes into `links` (`(repo, digest, link)`) of links to delete: not referenced by
/// `refs[repo]` (the blobs the repository's manifests reference; repositories absent from `refs`
/// are left alone) and linked at or before `now - grace` (epoch seconds).
pub fn stale_links(
    links: &[(String, Digest, BlobLink)],
    refs: &HashMap<String, HashSet<String>>,
    now: f64,
    grace: Duration,
) -> Vec<usize> {
    links
        .iter()
        .enumerate()
        .filter(|(_, (repo, d, link))| {
            refs.get(repo).is_some_and(|r| !r.contains(&d.to_string()))
                && link.linked_at <= now - grace.as_secs_f64()
        })
        .map(|(i, _)| i)
        .collect()
}

impl Registry {
    /// The blobs each repository's image manifests reference (config and layers); repositories
    /// with an unreadable manifest are left out (so nothing of theirs is collected).
    async fn manifest_references(&self) -> Result<HashMap<String, HashSet<String>>, RegistryError> {
        let mut out = HashMap::new();
        'repos: for repo in self.records().repositories().await? {
            let mut refs = HashSet::new();
            for image in self.records().images(&repo.name).await? {
                let Some(m) = self.parsed_manifest(&image) else {
                    tracing::warn!(repo = %repo.name, digest = %image.digest, "gc: manifest unreadable; skipping repository");
                    continue 'repos;
                };
                if m.kind == Kind::Image {
                    refs.extend(m.references.iter().map(|r| r.digest.to_string()));
                }
            }
            out.insert(repo.name, refs);
        }
        Ok(out)
    }

    /// Runs one garbage collection (see the module docs); safe while pushes and pulls run.
    pub async fn collect_garbage(&self, opts: GcOptions) -> Result<GcReport, RegistryError> {
        let mut report = GcReport::default();
        // 1. Links no manifest references.
        let refs = self.manifest_references().await?;
        let links = self.records().blob_links(None).await?;
        let plain: Vec<(String, Digest, BlobLink)> = links
            .iter()
            .map(|(r, d, l, _)| (r.clone(), d.clone(), l.clone()))
            .collect();
        for i in stale_links(&plain, &refs, berth_core::epoch_now(), opts.grace) {
            let (repo, d, _, rev) = &links[i];
            let key = crate::records::digest_key(repo, d);
            match self
                .store
                .commit(vec![Op::delete(KIND_BLOB, &key, Expect::Revision(*rev))])
                .await
            {
                Ok(_) => report.links_removed += 1,
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // 2. Blob files nothing references.
        let files = self.blobs.list()?;
        let mut images = Vec::new();
        for repo in self.records().repositories().await? {
            images.extend(
                self.records()
                    .images(&repo.name)
                    .await?
                    .into_iter()
                    .map(|i| i.digest),
            );
        }
        let links = self.records().blob_links(None).await?;
        let referenced = referenced_blobs(
            images.iter().map(String::as_str),
            links.iter().map(|(_, d, _, _)| d),
        );
        for (d, _, _) in files {
            if referenced.contains(&d.to_string()) {
                continue;
            }
            let freed = self.blobs.remove_if_idle(&d, opts.grace)?;
            if freed > 0 {
                report.blobs_removed += 1;
                report.bytes_freed += freed;
            }
        }
        // 3. Abandoned uploads.
        report.uploads_removed = self.uploads.sweep(opts.upload_max_idle).await?;
        Ok(report)
    }

    /// One maintenance round: applies every repository's lifecycle policy, then collects
    /// garbage. Returns the number of images expired and the collection report.
    pub async fn run_maintenance(
        &self,
        opts: GcOptions,
    ) -> Result<(usize, GcReport), RegistryError> {
        let mut expired = 0;
        for repo in self.records().repositories().await? {
            match self.apply_lifecycle(&repo.name).await {
                Ok(gone) => expired += gone.len(),
                Err(e) => tracing::warn!(repo = %repo.name, error = %e, "lifecycle policy failed"),
            }
        }
        let report = self.collect_garbage(opts).await?;
        Ok((expired, report))
    }

    /// Spawns [`Registry::run_maintenance`] every `every` on the current tokio runtime.
    pub fn spawn_maintenance(
        self: &std::sync::Arc<Self>,
        every: Duration,
        opts: GcOptions,
    ) -> tokio::task::JoinHandle<()> {
        let reg = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match reg.run_maintenance(opts).await {
                    Ok((expired, r)) => {
                        if expired > 0 || r != GcReport::default() {
                            tracing::info!(
                                expired,
                                links = r.links_removed,
                                blobs = r.blobs_removed,
                                bytes = r.bytes_freed,
                                uploads = r.uploads_removed,
                                "registry maintenance"
                            );
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "registry maintenance failed"),
                }
            }
        })
    }
}
