//! Offline import of a vulnerability database: OSV records (<https://ossf.github.io/osv-schema/>)
//! from the per-ecosystem archives osv.dev publishes (`<Ecosystem>/all.zip`, e.g. `Debian/all.zip`
//! and `Alpine/all.zip`, downloaded by the user on a connected machine), from a directory of OSV
//! JSON files, or from single JSON files, into the directory the scanner reads
//! (`berth server --scan-db DIR`, by default `<data-dir>/scan-db`).
//!
//! Archives are untrusted input: entry names are never used as paths. Each record is parsed,
//! must carry an id of `[A-Za-z0-9._-]` (at most 128 characters, not starting with `.`), and is
//! written as `<DIR>/<family>/<id>.json` (family `debian`, `ubuntu` or `alpine`) through a
//! temporary file and a rename, so the scanner never reads half a record. Records of other
//! ecosystems are skipped; records over [`MAX_RECORD_BYTES`] are refused.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::RegistryError;

/// Largest accepted OSV record (real ones are a few KiB).
pub const MAX_RECORD_BYTES: u64 = 4 * 1024 * 1024;

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// Records written (new or replaced).
    pub imported: usize,
    /// Well-formed records of ecosystems the scanner does not read (PyPI, npm, ...).
    pub other_ecosystems: usize,
    /// Entries that were not usable OSV records (bad JSON, no or unsafe id, too large).
    pub invalid: usize,
}

/// The distribution family the scanner reads for an OSV ecosystem (`Debian:12` -> `debian`).
fn family_of(ecosystem: &str) -> Option<&'static str> {
    let fam = ecosystem.split(':').next().unwrap_or("").trim();
    match fam.to_ascii_lowercase().as_str() {
        "debian" => Some("debian"),
        "ubuntu" => Some("ubuntu"),
        "alpine" => Some("alpine"),
        _ => None,
    }
}

fn safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Imports every source (a `.zip` archive, a directory searched recursively for `*.json`, or a
/// `.json` file) into `db_dir`, creating it. Errors: a source that cannot be read or is of an
/// unknown kind, or a write failure in `db_dir` (records written before stay, each whole).
pub fn import(sources: &[PathBuf], db_dir: &Path) -> Result<ImportReport, RegistryError> {
    std::fs::create_dir_all(db_dir)?;
    let mut report = ImportReport::default();
    for src in sources {
        let meta = std::fs::metadata(src).map_err(|e| {
            RegistryError::InvalidParameter(format!("cannot read {}: {e}", src.display()))
        })?;
        if meta.is_dir() {
            let mut files = Vec::new();
            json_files(src, &mut files)?;
            for f in files {
                let bytes = read_bounded(std::fs::File::open(&f)?)?;
                store(bytes.as_deref(), db_dir, &mut report)?;
            }
        } else if src
            .extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("zip"))
        {
            let mut zip = zip::ZipArchive::new(std::fs::File::open(src)?).map_err(|e| {
                RegistryError::InvalidParameter(format!(
                    "{}: not a zip archive: {e}",
                    src.display()
                ))
            })?;
            for i in 0..zip.len() {
                let entry = zip.by_index(i).map_err(|e| {
                    RegistryError::InvalidParameter(format!("{}: entry {i}: {e}", src.display()))
                })?;
                if !entry.is_file() || !entry.name().is_ok_and(|n| n.ends_with(".json")) {
                    continue;
                }
                let bytes = read_bounded(entry)?;
                store(bytes.as_deref(), db_dir, &mut report)?;
            }
        } else if src
            .extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("json"))
        {
            let bytes = read_bounded(std::fs::File::open(src)?)?;
            store(bytes.as_deref(), db_dir, &mut report)?;
        } else {
            return Err(RegistryError::InvalidParameter(format!(
                "{}: expected a directory, an OSV .zip archive or a .json file",
                src.display()
            )));
        }
    }
    Ok(report)
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            json_files(&e.path(), out)?;
        } else if t.is_file() && e.path().extension().is_some_and(|x| x == "json") {
            out.push(e.path());
        }
    }
    Ok(())
}

/// The whole of `r` when it is at most [`MAX_RECORD_BYTES`]; `None` when larger.
fn read_bounded(r: impl Read) -> Result<Option<Vec<u8>>, RegistryError> {
    let mut buf = Vec::new();
    r.take(MAX_RECORD_BYTES + 1).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= MAX_RECORD_BYTES).then_some(buf))
}

fn store(
    bytes: Option<&[u8]>,
    db_dir: &Path,
    report: &mut ImportReport,
) -> Result<(), RegistryError> {
    let Some(v) = bytes.and_then(|b| serde_json::from_slice::<Value>(b).ok()) else {
        report.invalid += 1;
        return Ok(());
    };
    let Some(id) = v.get("id").and_then(Value::as_str).filter(|i| safe_id(i)) else {
        report.invalid += 1;
        return Ok(());
    };
    let family = v
        .get("affected")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| a.pointer("/package/ecosystem").and_then(Value::as_str))
        .find_map(family_of);
    let Some(family) = family else {
        report.other_ecosystems += 1;
        return Ok(());
    };
    let dir = db_dir.join(family);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".{id}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&v).unwrap_or_default())?;
    std::fs::rename(&tmp, dir.join(format!("{id}.json")))?;
    report.imported += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn record(id: &str, eco: &str) -> String {
        serde_json::json!({
            "id": id,
            "affected": [{"package": {"ecosystem": eco, "name": "openssl"},
                          "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.0.1"}]}]}]
        })
        .to_string()
    }

    #[test]
    fn imports_an_osv_zip_by_record_id_and_ignores_entry_paths() {
        let dir = std::env::temp_dir().join(format!("berth-osv-import-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let zip_path = dir.join("all.zip");
        {
            let mut z = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
            let opts = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            for (name, body) in [
                ("DSA-1-1.json", record("DSA-1-1", "Debian:12")),
                (
                    "ALPINE-CVE-2024-1.json",
                    record("ALPINE-CVE-2024-1", "Alpine:v3.19"),
                ),
                ("PYSEC-1.json", record("PYSEC-1", "PyPI")),
                // The entry name tries to escape; the record is stored by its id.
                ("../../escape.json", record("DSA-2-1", "Debian:11")),
                // An id that is a path is refused.
                ("x.json", record("../../../etc/evil", "Debian:12")),
                ("bad.json", "{not json".to_string()),
                ("notes.txt", "ignored".to_string()),
            ] {
                z.start_file(name, opts).unwrap();
                z.write_all(body.as_bytes()).unwrap();
            }
            z.finish().unwrap();
        }
        let db = dir.join("db");
        let r = import(&[zip_path], &db).unwrap();
        assert_eq!(
            r,
            ImportReport {
                imported: 3,
                other_ecosystems: 1,
                invalid: 2
            }
        );
        assert!(db.join("debian/DSA-1-1.json").is_file());
        assert!(db.join("debian/DSA-2-1.json").is_file());
        assert!(db.join("alpine/ALPINE-CVE-2024-1.json").is_file());
        assert!(!dir.join("escape.json").exists());
        assert!(!std::path::Path::new("/etc/evil.json").exists());
        // The scanner reads what was imported.
        let (_, files) = crate::scan::osv::stamp(&db).unwrap();
        assert_eq!(files.len(), 3);
        // A directory source works too, and re-importing replaces in place.
        let r = import(&[db.join("debian")], &dir.join("db2")).unwrap();
        assert_eq!(r.imported, 2);
        assert!(import(&[dir.join("nope.tar")], &db).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
