//! Image scanning (ECR StartImageScan / DescribeImageScanFindings / `scanOnPush`) backed by a
//! real scan: the packages installed in the image's layers ([`packages`]: dpkg and apk
//! databases, whiteouts applied) matched against the OSV vulnerability database the operator
//! points berth at ([`osv`], `berth server --scan-db DIR`), versions compared with dpkg's or
//! apk's order ([`version`]).
//!
//! A scan runs in the background (one at a time) and its result is a [`ScanRecord`] in the state
//! store (`ecr.scan`, key `<repo>@<digest>`). Statuses, as ECR's `ScanStatus`:
//! - `IN_PROGRESS` while it runs;
//! - `COMPLETE` with the findings (possibly none);
//! - `UNSUPPORTED_IMAGE` when the image is not a container image (an artifact) or holds no dpkg
//!   or apk database ("The operating system and/or package manager are not supported", as ECR
//!   basic scanning says);
//! - `FAILED` with a description when there is no database to scan against (no `--scan-db`, or
//!   the directory cannot be read), a layer cannot be read, or the server restarted mid-scan.
//!
//! Never `COMPLETE` without a database: a missing database is `FAILED`, so `aws ecr wait
//! image-scan-complete` fails instead of reporting a clean image.

pub mod import;
pub mod osv;
pub mod packages;
pub mod version;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use berth_core::status::ScanStatus;
use berth_store::{Expect, Op, Store, StoreExt};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::manifests::{self, Kind};
use crate::records::{digest_key, ImageRecord};
use crate::{Registry, RegistryError};

/// Scan results: `<repo>@<digest>` -> [`ScanRecord`].
pub const KIND_SCAN: &str = "ecr.scan";

/// ECR `FindingSeverity` values, most severe first.
pub const SEVERITIES: [&str; 6] = [
    "CRITICAL",
    "HIGH",
    "MEDIUM",
    "LOW",
    "INFORMATIONAL",
    "UNDEFINED",
];

/// One finding (ECR `ImageScanFinding`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The CVE id, or the OSV id when the record has no CVE alias.
    pub name: String,
    pub description: String,
    pub uri: String,
    /// One of [`SEVERITIES`].
    pub severity: String,
    /// `(key, value)` pairs: `package_name`, `package_version`, `package_manager`, `osv_id`,
    /// and when known `fixed_in_version`, `source_package`, `CVSS3_SCORE`, `CVSS3_VECTOR`.
    pub attributes: Vec<(String, String)>,
}

/// The state of one image's last scan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScanRecord {
    /// ECR `ScanStatus`: `IN_PROGRESS`, `COMPLETE`, `FAILED` or `UNSUPPORTED_IMAGE`.
    pub status: ScanStatus,
    pub description: String,
    /// The scanned image's `pushedAt`: a record whose image was deleted and pushed again is
    /// stale and ignored.
    pub image_pushed_at: f64,
    /// Epoch seconds.
    pub started_at: f64,
    /// Epoch seconds, when finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<f64>,
    /// Epoch seconds of the newest database file, when a database was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_updated_at: Option<f64>,
    #[serde(default)]
    pub findings: Vec<Finding>,
}

impl ScanRecord {
    /// `{severity: count}` over the findings (ECR `findingSeverityCounts`).
    pub fn severity_counts(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        for s in SEVERITIES {
            let n = self.findings.iter().filter(|f| f.severity == s).count();
            if n > 0 {
                m.insert(s.to_string(), n.into());
            }
        }
        m
    }
}

/// The scanner: the database location, its loaded form (reloaded when the directory changes),
/// and the scans this process is running.
pub struct Scanner {
    db_dir: Option<PathBuf>,
    cache: Mutex<Option<(osv::Stamp, Arc<osv::VulnDb>)>>,
    running: Mutex<HashSet<String>>,
    /// One scan at a time (decompressing layers is CPU-bound).
    permit: tokio::sync::Semaphore,
}

impl Scanner {
    /// A scanner reading OSV files under `db_dir` (`None`: scans fail saying no database is
    /// configured).
    pub fn new(db_dir: Option<PathBuf>) -> Self {
        Self {
            db_dir,
            cache: Mutex::new(None),
            running: Mutex::new(HashSet::new()),
            permit: tokio::sync::Semaphore::new(1),
        }
    }

    /// The database, loaded or reused; `Err(description)` when none is configured or readable.
    fn database(&self) -> Result<Arc<osv::VulnDb>, String> {
        let Some(dir) = self.db_dir.as_ref().filter(|d| has_records(d)) else {
            return Err(NO_DATABASE.to_string());
        };
        // The description is shown to API callers: it names no host path.
        let (stamp, files) = osv::stamp(dir)
            .map_err(|e| format!("The vulnerability database directory cannot be read: {e}"))?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, db)) = cache.as_ref() {
            if *s == stamp {
                return Ok(db.clone());
            }
        }
        let db = Arc::new(osv::VulnDb::load(&files, stamp.2));
        tracing::info!(
            dir = %dir.display(),
            records = db.records,
            skipped = db.skipped,
            "vulnerability database loaded"
        );
        *cache = Some((stamp, db.clone()));
        Ok(db)
    }
}

/// The description of a scan without a database.
pub const NO_DATABASE: &str = "No vulnerability database is configured: import OSV records with `berth scan-db import <Debian/all.zip|Alpine/all.zip|DIR>` (osv.dev's per-ecosystem exports), or start berth server with --scan-db DIR (a directory of OSV JSON files), to scan images";

/// Whether `dir` holds at least one OSV JSON file (searched recursively).
fn has_records(dir: &std::path::Path) -> bool {
    osv::stamp(dir).is_ok_and(|((n, _, _), _)| n > 0)
}

/// What a finished scan found.
enum Outcome {
    Complete(Vec<Finding>, Option<f64>),
    Unsupported(String),
    Failed(String),
}

fn epoch(t: std::time::SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn attr(k: &str, v: &str) -> Option<(String, String)> {
    // ECR attribute values are 1-256 characters.
    let v: String = v.chars().take(256).collect();
    (!v.is_empty()).then(|| (k.to_string(), v))
}

fn findings(matches: Vec<osv::Match>) -> Vec<Finding> {
    let mut out: Vec<Finding> = matches
        .into_iter()
        .map(|m| {
            let v = &m.vuln;
            let mut attributes: Vec<(String, String)> = [
                attr("package_name", &m.package.name),
                attr("package_version", &m.package.version),
                attr("package_manager", m.package.manager.name()),
                attr("osv_id", &v.id),
                attr("fixed_in_version", &m.fixed),
                (m.matched_name != m.package.name)
                    .then(|| attr("source_package", &m.matched_name))
                    .flatten(),
            ]
            .into_iter()
            .flatten()
            .collect();
            if let Some((vector, score)) = &v.cvss3 {
                attributes.extend(attr("CVSS3_SCORE", &score.to_string()));
                attributes.extend(attr("CVSS3_VECTOR", vector));
            }
            Finding {
                name: v.cve.clone().unwrap_or_else(|| v.id.clone()),
                description: v.description.clone(),
                uri: v.uri.clone(),
                severity: m.severity.to_string(),
                attributes,
            }
        })
        .collect();
    let rank = |s: &str| {
        SEVERITIES
            .iter()
            .position(|x| *x == s)
            .unwrap_or(SEVERITIES.len())
    };
    out.sort_by(|a, b| {
        (rank(&a.severity), &a.name, &a.attributes).cmp(&(
            rank(&b.severity),
            &b.name,
            &b.attributes,
        ))
    });
    out
}

/// Scans the layer files `layers` (`(digest, path)`, bottom first) against `scanner`'s database.
fn run(scanner: &Scanner, layers: &[(String, PathBuf)]) -> Outcome {
    let db = match scanner.database() {
        Ok(db) => db,
        Err(e) => return Outcome::Failed(e),
    };
    let files = match packages::collect_files(layers) {
        Ok(f) => f,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let inv = packages::inventory(&files);
    if !inv.has_database {
        return Outcome::Unsupported(
            "UnsupportedImageError: The operating system and/or package manager are not supported: no dpkg (var/lib/dpkg/status) or apk (lib/apk/db/installed) database in the image".into(),
        );
    }
    let updated = db.updated_at.map(epoch);
    Outcome::Complete(findings(db.matches(&inv)), updated)
}

impl Registry {
    /// Uses the OSV files under `dir` as the vulnerability database (builder style, after
    /// [`Registry::open`]); without it every scan is `FAILED` saying no database is configured.
    pub fn with_scan_db(mut self, dir: Option<PathBuf>) -> Self {
        self.scanner = Arc::new(Scanner::new(dir));
        self
    }

    /// The last scan of `image` in `repo`, if any (a scan of an earlier push of the same digest
    /// is ignored; an `IN_PROGRESS` scan this process is not running is reported `FAILED`).
    pub fn scan_of(
        &self,
        repo: &str,
        image: &ImageRecord,
    ) -> Result<Option<ScanRecord>, RegistryError> {
        let key = format!("{repo}@{}", image.digest);
        let rec = self
            .store
            .get_json::<ScanRecord>(KIND_SCAN, &key)?
            .map(|(r, _)| r);
        Ok(rec
            .filter(|r| r.image_pushed_at == image.pushed_at)
            .map(|r| self.live(&key, r)))
    }

    /// Every current scan of `repo`'s images, by image digest.
    pub fn scans_of(
        &self,
        repo: &str,
        images: &[ImageRecord],
    ) -> Result<HashMap<String, ScanRecord>, RegistryError> {
        let pushed: HashMap<&str, f64> = images
            .iter()
            .map(|i| (i.digest.as_str(), i.pushed_at))
            .collect();
        let mut out = HashMap::new();
        let prefix = format!("{repo}@");
        for r in self.store.list(KIND_SCAN, &prefix)? {
            let digest = r.key[prefix.len()..].to_string();
            let rec: ScanRecord = r.decode()?;
            if pushed.get(digest.as_str()) == Some(&rec.image_pushed_at) {
                out.insert(digest, self.live(&r.key, rec));
            }
        }
        Ok(out)
    }

    fn live(&self, key: &str, mut r: ScanRecord) -> ScanRecord {
        if r.status == ScanStatus::InProgress
            && !self
                .scanner
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(key)
        {
            r.status = ScanStatus::Failed;
            r.description =
                "The scan was interrupted by a restart of the registry; start it again".into();
        }
        r
    }

    /// Starts a scan of `image` in `repo` and returns its first status: `IN_PROGRESS` (or the
    /// running scan's), `FAILED` at once without a database, `UNSUPPORTED_IMAGE` for artifacts.
    /// An image index is `UnsupportedImageType` (ECR scans the platform images, not the index).
    pub fn start_scan(&self, repo: &str, image: &ImageRecord) -> Result<ScanRecord, RegistryError> {
        let key = format!("{repo}@{}", image.digest);
        let now = berth_core::epoch_now();
        let mut rec = ScanRecord {
            status: ScanStatus::InProgress,
            description: "The scan is in progress".into(),
            image_pushed_at: image.pushed_at,
            started_at: now,
            completed_at: None,
            source_updated_at: None,
            findings: Vec::new(),
        };
        if manifests::kind_of(&image.media_type) == Some(Kind::Index) {
            return Err(RegistryError::UnsupportedImageType(
                "The image is an image index; scan the images it references instead".into(),
            ));
        }
        let m = self
            .parsed_manifest(image)
            .ok_or_else(|| RegistryError::ManifestUnknown(image.digest.clone()))?;
        if m.kind == Kind::Index {
            return Err(RegistryError::UnsupportedImageType(
                "The image is an image index; scan the images it references instead".into(),
            ));
        }
        let running = self
            .scanner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key);
        if running {
            if let Some(r) = self.scan_of(repo, image)? {
                return Ok(r);
            }
        }
        let config_type = m
            .references
            .first()
            .and_then(|c| c.media_type.clone())
            .unwrap_or_default();
        let image_config = matches!(
            config_type.as_str(),
            "application/vnd.oci.image.config.v1+json"
                | "application/vnd.docker.container.image.v1+json"
        );
        let finished = if !self.scanner.db_dir.as_deref().is_some_and(has_records) {
            Some((ScanStatus::Failed, NO_DATABASE.to_string()))
        } else if !image_config {
            Some((ScanStatus::UnsupportedImage, format!("UnsupportedImageError: the image is an artifact (config media type {config_type:?}), not a container image")))
        } else {
            None
        };
        if let Some((status, description)) = finished {
            rec.status = status;
            rec.description = description;
            rec.completed_at = Some(now);
            self.store
                .commit(vec![Op::put(KIND_SCAN, &key, &rec, Expect::Any)?])?;
            return Ok(rec);
        }
        let layers: Vec<(String, PathBuf)> = m.references[1..]
            .iter()
            .filter(|d| !d.foreign)
            .map(|d| (d.digest.to_string(), self.blobs.path(&d.digest)))
            .collect();
        self.store
            .commit(vec![Op::put(KIND_SCAN, &key, &rec, Expect::Any)?])?;
        self.scanner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone());
        let scanner = self.scanner.clone();
        let store = self.store.clone();
        let started = rec.clone();
        tokio::spawn(async move {
            let outcome = match scanner.permit.acquire().await {
                Ok(_permit) => {
                    let s = scanner.clone();
                    tokio::task::spawn_blocking(move || run(&s, &layers))
                        .await
                        .unwrap_or_else(|e| Outcome::Failed(format!("the scan crashed: {e}")))
                }
                Err(_) => Outcome::Failed("the scanner stopped".into()),
            };
            let mut rec = started;
            rec.completed_at = Some(berth_core::epoch_now());
            match outcome {
                Outcome::Complete(findings, updated) => {
                    rec.status = ScanStatus::Complete;
                    rec.description = "The scan was completed successfully.".into();
                    rec.findings = findings;
                    rec.source_updated_at = updated;
                }
                Outcome::Unsupported(d) => {
                    rec.status = ScanStatus::UnsupportedImage;
                    rec.description = d;
                }
                Outcome::Failed(d) => {
                    rec.status = ScanStatus::Failed;
                    rec.description = d;
                }
            }
            if let Err(e) = write_result(store.as_ref(), &key, &rec) {
                tracing::warn!(key, error = %e, "recording a scan result failed");
            }
            scanner
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        });
        Ok(rec)
    }

    /// After a push: scans the new image `digest` when `repo` has `scanOnPush` (image indexes
    /// are not scanned; their platform images are, as they are pushed).
    pub(crate) fn scan_on_push(&self, repo: &str, digest: &Digest) {
        let res = (|| -> Result<(), RegistryError> {
            let (r, _) = self.records().repository(repo)?;
            if !r.scan_on_push {
                return Ok(());
            }
            let Some(image) = self.records().image(repo, digest)? else {
                return Ok(());
            };
            if manifests::kind_of(&image.media_type) == Some(Kind::Index) {
                return Ok(());
            }
            match self.start_scan(repo, &image) {
                Err(RegistryError::UnsupportedImageType(_)) => Ok(()),
                r => r.map(|_| ()),
            }
        })();
        if let Err(e) = res {
            tracing::warn!(repo, %digest, error = %e, "scan on push failed to start");
        }
    }
}

/// Records a finished scan unless the image's record changed meanwhile (deleted or re-pushed:
/// then the scan's `image_pushed_at` no longer matches and the result is simply ignored).
fn write_result(store: &dyn Store, key: &str, rec: &ScanRecord) -> Result<(), RegistryError> {
    match store.get_json::<ScanRecord>(KIND_SCAN, key)? {
        Some((cur, rev)) if cur.started_at == rec.started_at => {
            store.commit(vec![Op::put(KIND_SCAN, key, rec, Expect::Revision(rev))?])?;
        }
        _ => {}
    }
    Ok(())
}

/// The op deleting image `digest`'s scan record in `repo` (with the image).
pub fn delete_op(repo: &str, digest: &Digest) -> Op {
    Op::delete(KIND_SCAN, &digest_key(repo, digest), Expect::Any)
}
