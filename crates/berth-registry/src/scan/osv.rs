//! The vulnerability database: a directory of OSV JSON files (<https://ossf.github.io/osv-schema/>),
//! searched recursively (`*.json`, one vulnerability per file, as osv.dev's per-ecosystem exports
//! unpack), and matching installed packages against it.
//!
//! Only `affected[]` entries of the distribution ecosystems the scanner reads are kept:
//! `Debian[:<release>]`, `Ubuntu[:<release>[:LTS]]` (dpkg) and `Alpine[:v<major.minor>]` (apk).
//! A package is affected when its version is listed in `versions[]`, or an `ECOSYSTEM` range's
//! `events` (`introduced`, `fixed`, `last_affected`, `limit`; evaluated as the OSV schema
//! describes) put it in an affected interval, compared with dpkg or apk version order.
//!
//! Severity, first found: `affected[].ecosystem_specific.severity`,
//! `affected[].database_specific.severity`, `database_specific.severity` (words such as
//! `HIGH`, `moderate`, `unimportant`), then `severity[]` / `affected[].severity` (`CVSS_V3`
//! vectors are scored with the CVSS v3.1 base formula; numeric scores are taken as they are),
//! mapped to ECR's `CRITICAL|HIGH|MEDIUM|LOW|INFORMATIONAL|UNDEFINED`.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Deserialize;

use super::packages::{Inventory, Manager, Package};
use super::version::{apk_cmp, dpkg_cmp};

#[derive(Deserialize, Default)]
struct OsvFile {
    #[serde(default)]
    id: String,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    details: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    severity: Vec<OsvSeverity>,
    #[serde(default)]
    affected: Vec<OsvAffected>,
    #[serde(default)]
    references: Vec<OsvReference>,
    #[serde(default)]
    database_specific: Option<serde_json::Value>,
    #[serde(default)]
    withdrawn: Option<String>,
}

#[derive(Deserialize, Clone)]
struct OsvSeverity {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    score: String,
}

#[derive(Deserialize)]
struct OsvReference {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    url: String,
}

#[derive(Deserialize, Default)]
struct OsvPackage {
    #[serde(default)]
    ecosystem: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
struct OsvAffected {
    #[serde(default)]
    package: Option<OsvPackage>,
    #[serde(default)]
    ranges: Vec<OsvRange>,
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    severity: Vec<OsvSeverity>,
    #[serde(default)]
    ecosystem_specific: Option<serde_json::Value>,
    #[serde(default)]
    database_specific: Option<serde_json::Value>,
}

#[derive(Deserialize, Clone)]
struct OsvRange {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    events: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// One vulnerability as findings report it.
#[derive(Debug)]
pub struct Vulnerability {
    /// The OSV id.
    pub id: String,
    /// The CVE id (the id itself or the first `CVE-` alias), if any.
    pub cve: Option<String>,
    pub description: String,
    pub uri: String,
    /// ECR severity of the record as a whole (`UNDEFINED` when none is given).
    pub severity: &'static str,
    /// `(version, vector)` of a CVSS v3 score, with its base score.
    pub cvss3: Option<(String, f64)>,
}

/// One range event.
#[derive(Debug, Clone)]
enum Event {
    Introduced(String),
    Fixed(String),
    LastAffected(String),
    Limit(String),
}

/// One `affected[]` entry for a distribution package.
#[derive(Debug)]
struct Affected {
    vuln: Arc<Vulnerability>,
    /// The release part of the ecosystem (`12`, `v3.19`, `22.04:LTS`), empty for all releases.
    release: String,
    versions: Vec<String>,
    /// ECOSYSTEM ranges, each a list of events.
    ranges: Vec<Vec<Event>>,
    severity: Option<&'static str>,
}

/// A loaded database: affected entries by `(ecosystem family, package name)`.
#[derive(Debug, Default)]
pub struct VulnDb {
    entries: HashMap<(String, String), Vec<Affected>>,
    /// Number of OSV records loaded.
    pub records: usize,
    /// Files that could not be parsed (skipped).
    pub skipped: usize,
    /// Newest modification time of the files (ECR `vulnerabilitySourceUpdatedAt`).
    pub updated_at: Option<SystemTime>,
}

/// A change detector for the database directory: file count, total size, newest mtime.
pub type Stamp = (usize, u64, Option<SystemTime>);

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        let p = e.path();
        if t.is_dir() {
            json_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
    Ok(())
}

/// The directory's [`Stamp`] and its JSON files; an error when it cannot be read.
pub fn stamp(dir: &Path) -> std::io::Result<(Stamp, Vec<PathBuf>)> {
    let mut files = Vec::new();
    json_files(dir, &mut files)?;
    files.sort();
    let mut size = 0;
    let mut newest = None;
    for f in &files {
        if let Ok(m) = std::fs::metadata(f) {
            size += m.len();
            let t = m.modified().ok();
            if t > newest {
                newest = t;
            }
        }
    }
    Ok(((files.len(), size, newest), files))
}

/// `(family, release)` of an OSV ecosystem the scanner reads: `Debian:12` -> `("debian",
/// "12")`; other ecosystems give `None`.
fn family(ecosystem: &str) -> Option<(String, String)> {
    let (fam, rel) = ecosystem.split_once(':').unwrap_or((ecosystem, ""));
    let fam = fam.trim().to_ascii_lowercase();
    matches!(fam.as_str(), "debian" | "ubuntu" | "alpine").then(|| (fam, rel.trim().to_string()))
}

/// ECR's severity for an OSV/distribution severity word.
pub fn severity_word(s: &str) -> Option<&'static str> {
    Some(match s.trim().to_ascii_uppercase().as_str() {
        "CRITICAL" => "CRITICAL",
        "HIGH" | "IMPORTANT" => "HIGH",
        "MEDIUM" | "MODERATE" => "MEDIUM",
        "LOW" => "LOW",
        "NEGLIGIBLE" | "UNIMPORTANT" | "INFORMATIONAL" | "NONE" => "INFORMATIONAL",
        _ => return None,
    })
}

/// ECR's severity for a CVSS base score (CVSS v3 rating scale).
pub fn severity_of_score(score: f64) -> &'static str {
    match score {
        s if s >= 9.0 => "CRITICAL",
        s if s >= 7.0 => "HIGH",
        s if s >= 4.0 => "MEDIUM",
        s if s > 0.0 => "LOW",
        _ => "INFORMATIONAL",
    }
}

/// The CVSS v3.x base score of a vector such as `CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H`
/// (CVSS v3.1 specification §7.1 and Appendix A `Roundup`); `None` when a base metric is missing
/// or unknown.
pub fn cvss3_base_score(vector: &str) -> Option<f64> {
    let mut m: HashMap<&str, &str> = HashMap::new();
    let mut parts = vector.split('/');
    if !parts.next()?.starts_with("CVSS:3") {
        return None;
    }
    for p in parts {
        let (k, v) = p.split_once(':')?;
        m.insert(k, v);
    }
    let changed = match *m.get("S")? {
        "U" => false,
        "C" => true,
        _ => return None,
    };
    let av = match *m.get("AV")? {
        "N" => 0.85,
        "A" => 0.62,
        "L" => 0.55,
        "P" => 0.2,
        _ => return None,
    };
    let ac = match *m.get("AC")? {
        "L" => 0.77,
        "H" => 0.44,
        _ => return None,
    };
    let pr = match (*m.get("PR")?, changed) {
        ("N", _) => 0.85,
        ("L", false) => 0.62,
        ("L", true) => 0.68,
        ("H", false) => 0.27,
        ("H", true) => 0.5,
        _ => return None,
    };
    let ui = match *m.get("UI")? {
        "N" => 0.85,
        "R" => 0.62,
        _ => return None,
    };
    let cia = |k: &str| -> Option<f64> {
        Some(match *m.get(k)? {
            "H" => 0.56,
            "L" => 0.22,
            "N" => 0.0,
            _ => return None,
        })
    };
    let (c, i, a) = (cia("C")?, cia("I")?, cia("A")?);
    let iss = 1.0 - (1.0 - c) * (1.0 - i) * (1.0 - a);
    let impact = if changed {
        7.52 * (iss - 0.029) - 3.25 * (iss - 0.02f64).powi(15)
    } else {
        6.42 * iss
    };
    let exploitability = 8.22 * av * ac * pr * ui;
    if impact <= 0.0 {
        return Some(0.0);
    }
    let raw = if changed {
        (1.08 * (impact + exploitability)).min(10.0)
    } else {
        (impact + exploitability).min(10.0)
    };
    // Roundup (v3.1): the smallest one-decimal number >= raw, robust to float error.
    let int = (raw * 100_000.0).round() as i64;
    Some(if int % 10_000 == 0 {
        int as f64 / 100_000.0
    } else {
        ((int / 10_000) + 1) as f64 / 10.0
    })
}

fn word_in(v: Option<&serde_json::Value>) -> Option<&'static str> {
    v?.get("severity")?.as_str().and_then(severity_word)
}

/// `(severity, cvss3)` from `severity[]` entries.
fn from_scores(list: &[OsvSeverity]) -> (Option<&'static str>, Option<(String, f64)>) {
    for s in list {
        if let Ok(n) = s.score.trim().parse::<f64>() {
            return (Some(severity_of_score(n)), None);
        }
        if s.kind == "CVSS_V3" {
            if let Some(n) = cvss3_base_score(&s.score) {
                return (Some(severity_of_score(n)), Some((s.score.clone(), n)));
            }
        }
    }
    (None, None)
}

fn events(r: &OsvRange) -> Vec<Event> {
    let mut out = Vec::new();
    for e in &r.events {
        for (k, v) in e {
            let Some(v) = v.as_str() else { continue };
            let v = v.to_string();
            out.push(match k.as_str() {
                "introduced" => Event::Introduced(v),
                "fixed" => Event::Fixed(v),
                "last_affected" => Event::LastAffected(v),
                "limit" => Event::Limit(v),
                _ => continue,
            });
        }
    }
    out
}

impl VulnDb {
    /// Loads `files` (see [`stamp`]); unparsable files are counted in `skipped`.
    pub fn load(files: &[PathBuf], updated_at: Option<SystemTime>) -> VulnDb {
        let mut db = VulnDb {
            updated_at,
            ..Default::default()
        };
        for f in files {
            let parsed = std::fs::read(f)
                .ok()
                .and_then(|b| serde_json::from_slice::<OsvFile>(&b).ok());
            match parsed {
                Some(v) => db.add(v),
                None => db.skipped += 1,
            }
        }
        db
    }

    /// Parses one OSV document (tests and loading).
    pub fn add_json(&mut self, json: &str) -> Result<(), serde_json::Error> {
        self.add(serde_json::from_str(json)?);
        Ok(())
    }

    fn add(&mut self, v: OsvFile) {
        self.records += 1;
        if v.withdrawn.is_some() || v.id.is_empty() {
            return;
        }
        let relevant: Vec<&OsvAffected> = v
            .affected
            .iter()
            .filter(|a| {
                a.package
                    .as_ref()
                    .is_some_and(|p| family(&p.ecosystem).is_some())
            })
            .collect();
        if relevant.is_empty() {
            return;
        }
        let (score_sev, cvss3) = from_scores(&v.severity);
        let severity = word_in(v.database_specific.as_ref())
            .or(score_sev)
            .unwrap_or("UNDEFINED");
        let cve = std::iter::once(&v.id)
            .chain(v.aliases.iter())
            .find(|a| a.starts_with("CVE-"))
            .cloned();
        let uri = v
            .references
            .iter()
            .find(|r| r.kind == "ADVISORY")
            .or_else(|| v.references.iter().find(|r| r.kind == "WEB"))
            .or(v.references.first())
            .map(|r| r.url.clone())
            .unwrap_or_else(|| format!("https://osv.dev/vulnerability/{}", v.id));
        let description = v
            .details
            .clone()
            .filter(|d| !d.trim().is_empty())
            .or(v.summary.clone())
            .unwrap_or_default();
        let vuln = Arc::new(Vulnerability {
            id: v.id.clone(),
            cve,
            description,
            uri,
            severity,
            cvss3,
        });
        for a in relevant {
            let p = a.package.as_ref().expect("filtered");
            let (fam, release) = family(&p.ecosystem).expect("filtered");
            let severity = word_in(a.ecosystem_specific.as_ref())
                .or_else(|| word_in(a.database_specific.as_ref()))
                .or_else(|| from_scores(&a.severity).0);
            self.entries
                .entry((fam, p.name.clone()))
                .or_default()
                .push(Affected {
                    vuln: vuln.clone(),
                    release,
                    versions: a.versions.clone(),
                    ranges: a
                        .ranges
                        .iter()
                        .filter(|r| r.kind == "ECOSYSTEM")
                        .map(events)
                        .collect(),
                    severity,
                });
        }
    }

    /// The vulnerabilities affecting `inv`'s packages, one per (vulnerability, package).
    pub fn matches(&self, inv: &Inventory) -> Vec<Match> {
        let os = inv.os.clone().unwrap_or_default();
        let mut out: Vec<Match> = Vec::new();
        for pkg in &inv.packages {
            let (fam, release) = distro(pkg.manager, &os);
            // Distribution databases name source packages; binary names are tried too.
            let mut candidates: Vec<(&str, &str)> = Vec::new();
            if let Some(src) = &pkg.source {
                candidates.push((src, pkg.source_version.as_deref().unwrap_or(&pkg.version)));
            }
            candidates.push((&pkg.name, &pkg.version));
            for (name, version) in candidates {
                for fam in &fam {
                    let Some(list) = self.entries.get(&(fam.to_string(), name.to_string())) else {
                        continue;
                    };
                    for a in list {
                        if !release_matches(fam, &a.release, release.as_deref()) {
                            continue;
                        }
                        let Some(fixed) = affected(a, version, pkg.manager) else {
                            continue;
                        };
                        if out
                            .iter()
                            .any(|m| m.vuln.id == a.vuln.id && m.package.name == pkg.name)
                        {
                            continue;
                        }
                        out.push(Match {
                            vuln: a.vuln.clone(),
                            package: pkg.clone(),
                            matched_name: name.to_string(),
                            matched_version: version.to_string(),
                            fixed,
                            severity: a.severity.unwrap_or(a.vuln.severity),
                        });
                    }
                }
            }
        }
        out
    }
}

/// A vulnerable package.
#[derive(Debug, Clone)]
pub struct Match {
    pub vuln: Arc<Vulnerability>,
    pub package: Package,
    /// The name and version the database matched (source or binary package).
    pub matched_name: String,
    pub matched_version: String,
    /// The version that fixes it, if the database gives one (`""`: none).
    pub fixed: String,
    /// ECR severity.
    pub severity: &'static str,
}

/// The ecosystem families and release to look a package up under, from its manager and
/// `os-release` (`None` release: unknown, every release matches).
fn distro(m: Manager, os: &super::packages::OsRelease) -> (Vec<&'static str>, Option<String>) {
    let version = (!os.version_id.is_empty()).then(|| os.version_id.clone());
    match (m, os.id.as_str()) {
        (Manager::Apk, _) => (
            vec!["alpine"],
            version.map(|v| {
                let mm: Vec<&str> = v.split('.').take(2).collect();
                format!("v{}", mm.join("."))
            }),
        ),
        (Manager::Dpkg, "ubuntu") => (vec!["ubuntu"], version),
        (Manager::Dpkg, "debian") => (
            vec!["debian"],
            version.map(|v| v.split('.').next().unwrap_or("").to_string()),
        ),
        (Manager::Dpkg, _) => (vec!["debian"], None),
    }
}

fn release_matches(fam: &str, entry: &str, image: Option<&str>) -> bool {
    let Some(image) = image else { return true };
    if entry.is_empty() {
        return true;
    }
    match fam {
        // `Ubuntu:22.04:LTS`, `Ubuntu:Pro:18.04:LTS`.
        "ubuntu" => entry.split(':').any(|p| p == image),
        _ => entry == image,
    }
}

fn cmp(m: Manager, a: &str, b: &str) -> Ordering {
    match m {
        Manager::Dpkg => dpkg_cmp(a, b),
        Manager::Apk => apk_cmp(a, b),
    }
}

/// Whether `version` is affected by `a`: `Some(fixed version or "")`, `None` when not.
fn affected(a: &Affected, version: &str, m: Manager) -> Option<String> {
    if a.versions
        .iter()
        .any(|v| cmp(m, v, version) == Ordering::Equal)
    {
        return Some(String::new());
    }
    for r in &a.ranges {
        if let Some(fixed) = in_range(r, version, m) {
            return Some(fixed);
        }
    }
    None
}

/// The OSV schema's range evaluation: events sorted by version (`introduced: "0"` first);
/// `version` is affected when the last event at or below it is an `introduced` (a
/// `last_affected` equal to it still counts) and it is below every `limit`.
fn in_range(events: &[Event], version: &str, m: Manager) -> Option<String> {
    let key = |e: &Event| -> (String, u8) {
        match e {
            Event::Introduced(v) => (v.clone(), 0),
            Event::Fixed(v) => (v.clone(), 1),
            Event::LastAffected(v) => (v.clone(), 2),
            Event::Limit(v) => (v.clone(), 3),
        }
    };
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by(|a, b| {
        let (va, ka) = key(a);
        let (vb, kb) = key(b);
        let zero = |v: &str, k: u8| k == 0 && v == "0";
        match (zero(&va, ka), zero(&vb, kb)) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            _ => cmp(m, &va, &vb).then(ka.cmp(&kb)),
        }
    });
    for e in &sorted {
        if let Event::Limit(l) = e {
            if cmp(m, version, l) != Ordering::Less {
                return None;
            }
        }
    }
    let mut affected = false;
    for e in &sorted {
        match e {
            Event::Introduced(v) if v == "0" || cmp(m, version, v) != Ordering::Less => {
                affected = true
            }
            Event::Fixed(v) if cmp(m, version, v) != Ordering::Less => affected = false,
            Event::LastAffected(v) if cmp(m, version, v) == Ordering::Greater => affected = false,
            _ => {}
        }
    }
    if !affected {
        return None;
    }
    let fixed = sorted
        .iter()
        .find_map(|e| match e {
            Event::Fixed(v) if cmp(m, version, v) == Ordering::Less => Some(v.clone()),
            _ => None,
        })
        .unwrap_or_default();
    Some(fixed)
}

#[cfg(test)]
mod tests {
    use super::super::packages::OsRelease;
    use super::*;

    fn pkg(name: &str, version: &str, source: Option<&str>, m: Manager) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            source: source.map(Into::into),
            source_version: None,
            manager: m,
        }
    }

    #[test]
    fn cvss3_scores_match_the_calculator() {
        // Values from the FIRST CVSS v3.1 calculator.
        for (v, want) in [
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
            ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N", 5.5),
            ("CVSS:3.0/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N", 3.1),
            ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:L/I:L/A:N", 6.4),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
        ] {
            assert_eq!(cvss3_base_score(v), Some(want), "{v}");
        }
        assert_eq!(cvss3_base_score("CVSS:2.0/AV:N"), None);
        assert_eq!(severity_of_score(9.8), "CRITICAL");
        assert_eq!(severity_of_score(5.5), "MEDIUM");
    }

    #[test]
    fn matches_ranges_versions_releases_and_severities() {
        let mut db = VulnDb::default();
        db.add_json(r#"{"id":"DEBIAN-CVE-2024-0001","aliases":["CVE-2024-0001"],"details":"bad","database_specific":{"severity":"high"},
            "affected":[
              {"package":{"ecosystem":"Debian:12","name":"openssl"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"3.0.13-1~deb12u1"}]}]},
              {"package":{"ecosystem":"Debian:11","name":"openssl"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"}]}]}]}"#).unwrap();
        db.add_json(r#"{"id":"ALPINE-CVE-2024-0002","severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
            "affected":[{"package":{"ecosystem":"Alpine:v3.19","name":"openssl"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"3.1.0-r0"},{"last_affected":"3.1.4-r5"}]}]}]}"#).unwrap();
        db.add_json(r#"{"id":"OSV-3","affected":[{"package":{"ecosystem":"Debian","name":"zlib1g"},"versions":["1:1.2.13.dfsg-1"]},
            {"package":{"ecosystem":"PyPI","name":"zlib1g"},"versions":["1"]}]}"#).unwrap();
        db.add_json(r#"{"id":"OSV-4","withdrawn":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"Debian:12","name":"openssl"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"}]}]}]}"#).unwrap();
        let deb = |v: &str| Inventory {
            os: Some(OsRelease {
                id: "debian".into(),
                version_id: "12".into(),
            }),
            packages: vec![
                pkg("libssl3", v, Some("openssl"), Manager::Dpkg),
                pkg("zlib1g", "1:1.2.13.dfsg-1", None, Manager::Dpkg),
            ],
            has_database: true,
        };
        let m = db.matches(&deb("3.0.11-1~deb12u2"));
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m[0].vuln.cve.as_deref(), Some("CVE-2024-0001"));
        assert_eq!(m[0].severity, "HIGH");
        assert_eq!(m[0].fixed, "3.0.13-1~deb12u1");
        assert_eq!(m[0].matched_name, "openssl");
        assert_eq!(m[1].vuln.id, "OSV-3");
        assert_eq!(m[1].severity, "UNDEFINED");
        // Fixed version and later: not affected (only the Debian 11 entry would match, and the
        // image is Debian 12).
        assert_eq!(db.matches(&deb("3.0.13-1~deb12u1")).len(), 1);
        assert_eq!(db.matches(&deb("3.0.15-1~deb12u1")).len(), 1);
        let alpine = |v: &str| Inventory {
            os: Some(OsRelease {
                id: "alpine".into(),
                version_id: "3.19.1".into(),
            }),
            packages: vec![pkg("libcrypto3", v, Some("openssl"), Manager::Apk)],
            has_database: true,
        };
        let m = db.matches(&alpine("3.1.4-r5"));
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].severity, "CRITICAL");
        assert_eq!(m[0].vuln.cvss3.as_ref().unwrap().1, 9.8);
        assert!(db.matches(&alpine("3.1.4-r6")).is_empty());
        assert!(db.matches(&alpine("3.0.12-r0")).is_empty());
    }

    #[test]
    fn range_evaluation_follows_the_schema() {
        let ev = |list: &[(&str, &str)]| -> Vec<Event> {
            list.iter()
                .map(|(k, v)| match *k {
                    "i" => Event::Introduced(v.to_string()),
                    "f" => Event::Fixed(v.to_string()),
                    "l" => Event::LastAffected(v.to_string()),
                    _ => Event::Limit(v.to_string()),
                })
                .collect()
        };
        let two = ev(&[
            ("i", "1.0-1"),
            ("f", "1.2-1"),
            ("i", "2.0-1"),
            ("f", "2.1-1"),
        ]);
        for (v, want) in [
            ("0.9-1", false),
            ("1.0-1", true),
            ("1.1-1", true),
            ("1.2-1", false),
            ("1.5-1", false),
            ("2.0-1", true),
            ("2.1-1", false),
        ] {
            assert_eq!(in_range(&two, v, Manager::Dpkg).is_some(), want, "{v}");
        }
        assert_eq!(in_range(&two, "2.0-1", Manager::Dpkg).unwrap(), "2.1-1");
        let limited = ev(&[("i", "0"), ("m", "2.0-1")]);
        assert!(in_range(&limited, "1.9-1", Manager::Dpkg).is_some());
        assert!(in_range(&limited, "2.0-1", Manager::Dpkg).is_none());
    }
}
