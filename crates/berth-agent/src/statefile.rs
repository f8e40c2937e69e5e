//! The agent's state files (`task.json`, `report.json`, `net.json`, `health`, `log.pos`,
//! `credential`) are replaced whole: written to a temporary file in the same directory, synced,
//! then renamed over the old one, so a crash (or `kill -9`) at any moment leaves either the old
//! or the new content, never a torn or empty file. (A task's bundle and `/etc` files are not
//! state: a task the agent lost while preparing them is undone and started anew.)

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` (mode `mode` for a new file): temporary file, `fdatasync`,
/// rename. The temporary file is removed when a step fails.
pub fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} has no file name", path.display())))?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// [`write_mode`] with mode 0644.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_mode(path, bytes, 0o644)
}

/// [`write`] of `value` as JSON.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    write(
        path,
        &serde_json::to_vec(value).map_err(std::io::Error::other)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_and_leaves_no_temporary_file() {
        let d = std::env::temp_dir().join(format!("berth-statefile-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("report.json");
        write_json(&p, &serde_json::json!({"a": 1})).unwrap();
        write(&p, b"{\"b\":2}").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"b\":2}");
        write_mode(&d.join("credential"), b"x", 0o600).unwrap();
        assert_eq!(
            std::fs::metadata(d.join("credential"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        let names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // A directory that does not exist fails without leaving anything.
        assert!(write(&d.join("nope").join("x"), b"1").is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
