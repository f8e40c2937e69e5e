//! Ships one container's output from the shim's log file (`c<idx>/log`, lines
//! `<epoch ms> <1|2> <text>`) to CloudWatch Logs, remembering in `c<idx>/log.pos` how far it
//! has been delivered, so a restarted agent resumes there: nothing lost, nothing sent twice
//! (short of a crash between a delivery and the position write).
//!
//! Delivered bytes are freed on disk as the file grows: every [`RELEASE_EVERY`] bytes the
//! delivered head of the file is punched out (`fallocate(PUNCH_HOLE)`), so a chatty task keeps
//! its log file sparse — offsets stay valid for the shim (which only appends) and for this
//! tailer, while the disk holds only what is not yet delivered. On file systems without hole
//! punching the file simply keeps everything.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use berth_api::agent::{LogDestination, LogLine};
use tokio::sync::Notify;

use crate::control::LogShipper;

/// How many delivered bytes accumulate before they are released on disk.
pub const RELEASE_EVERY: u64 = 1024 * 1024;

/// Frees the disk blocks of `path`'s first `upto` bytes (rounded down to 4 KiB), keeping the
/// file's size and every offset. Returns false when the file system cannot punch holes.
pub fn release_delivered(path: &std::path::Path, upto: u64) -> bool {
    use std::os::fd::AsRawFd;
    let len = upto & !4095;
    if len == 0 {
        return true;
    }
    let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) else {
        return false;
    };
    use nix::libc;
    // SAFETY: fallocate on a descriptor we own; the range lies inside the file.
    unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            len as libc::off_t,
        ) == 0
    }
}

/// A running tailer.
pub struct Tailer {
    notify: Arc<Notify>,
    closing: Arc<AtomicBool>,
    join: tokio::task::JoinHandle<()>,
}

/// Splits complete framed lines off `buf`; returns (timestamp ms, text) pairs and how many
/// bytes they used.
pub fn parse_frames(buf: &[u8]) -> (Vec<(i64, String)>, usize) {
    let mut out = Vec::new();
    let mut used = 0;
    while let Some(p) = buf[used..].iter().position(|b| *b == b'\n') {
        let line = &buf[used..used + p];
        used += p + 1;
        let mut parts = line.splitn(3, |b| *b == b' ');
        let ts = parts
            .next()
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| t.parse::<i64>().ok());
        let _stream = parts.next();
        let text = parts.next().unwrap_or(b"");
        if let Some(ts) = ts {
            out.push((ts, String::from_utf8_lossy(text).into_owned()));
        }
    }
    (out, used)
}

impl Tailer {
    /// Starts tailing `cdir/log` into `dest`.
    pub fn start(cdir: PathBuf, dest: LogDestination, logs: LogShipper) -> Tailer {
        let notify = Arc::new(Notify::new());
        let closing = Arc::new(AtomicBool::new(false));
        let (n, c) = (notify.clone(), closing.clone());
        let join = tokio::spawn(async move {
            let pos_file = cdir.join("log.pos");
            let mut pos: u64 = std::fs::read_to_string(&pos_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            let mut released = 0u64;
            loop {
                let closing_now = c.load(Ordering::SeqCst);
                let path = cdir.join("log");
                let chunk = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
                    let mut f = match std::fs::File::open(&path) {
                        Ok(f) => f,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
                        Err(e) => return Err(e),
                    };
                    f.seek(SeekFrom::Start(pos))?;
                    let mut b = Vec::new();
                    f.take(8 * 1024 * 1024).read_to_end(&mut b)?;
                    Ok(b)
                })
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or_default();
                let (lines, used) = parse_frames(&chunk);
                if used > 0 {
                    for (ts, message) in lines {
                        logs.line(LogLine {
                            group: dest.group.clone(),
                            stream: dest.stream.clone(),
                            timestamp: ts,
                            message,
                        });
                    }
                    logs.flush().await;
                    pos += used as u64;
                    let pos_file = pos_file.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        crate::statefile::write(&pos_file, pos.to_string().as_bytes())
                    })
                    .await;
                    if pos - released >= RELEASE_EVERY {
                        released = pos;
                        let path = cdir.join("log");
                        let _ = tokio::task::spawn_blocking(move || release_delivered(&path, pos))
                            .await;
                    }
                    continue;
                }
                if closing_now {
                    return;
                }
                n.notified().await;
            }
        });
        Tailer {
            notify,
            closing,
            join,
        }
    }

    /// New lines are in the file.
    pub fn poke(&self) {
        self.notify.notify_one();
    }

    /// Ships what is left and ends.
    pub async fn finish(self) {
        self.closing.store(true, Ordering::SeqCst);
        self.notify.notify_one();
        let _ = self.join.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let (l, used) = parse_frames(b"12 1 hello world\n13 2 \n14 1 partial");
        assert_eq!(
            l,
            vec![(12, "hello world".to_string()), (13, String::new())]
        );
        assert_eq!(used, 23);
    }

    #[test]
    fn delivered_bytes_are_released_on_disk() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("berth-tailer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("log");
        let line = format!("1700000000000 1 {}\n", "x".repeat(1000));
        std::fs::write(&p, line.repeat(4096)).unwrap(); // ~4 MiB
        let size = std::fs::metadata(&p).unwrap().len();
        let before = std::fs::metadata(&p).unwrap().blocks();
        if !release_delivered(&p, size - 100_000) {
            eprintln!("no hole punching on this file system; nothing to check");
            std::fs::remove_dir_all(&dir).unwrap();
            return;
        }
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.len(), size, "the size and offsets stay");
        assert!(
            m.blocks() * 512 < 200_000,
            "{} of {before} blocks left",
            m.blocks()
        );
        // What was not delivered is intact.
        let b = std::fs::read(&p).unwrap();
        assert_eq!(&b[b.len() - line.len()..], line.as_bytes());
        assert!(b[..4096].iter().all(|x| *x == 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
