//! `berth push` and `berth pull`: copy images between an OCI image layout on disk and a
//! registry (berth's own by default), showing progress (bytes, rate) on a terminal.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context};
use berth_core::image_ref::ImageRef;
use berth_registry::client::{Client, Progress};

/// `oci:DIR[:TAG]` (or `DIR[:TAG]`) -> (directory, tag).
fn parse_layout(s: &str) -> (PathBuf, Option<String>) {
    let s = s.strip_prefix("oci:").unwrap_or(s);
    match s.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') && !tag.is_empty() => {
            (PathBuf::from(dir), Some(tag.to_string()))
        }
        _ => (PathBuf::from(s), None),
    }
}

/// Resolves an image reference to (registry base URL, repository, tag-or-digest). References
/// without a registry or naming an ECR host go to `endpoint` (berth's own registry).
fn resolve(reference: &str, endpoint: &str) -> anyhow::Result<(String, String, String)> {
    let r = ImageRef::parse(reference).map_err(anyhow::Error::msg)?;
    let base = match &r.registry {
        None => endpoint.to_string(),
        Some(_) if r.is_ecr_host() => endpoint.to_string(),
        Some(host) => format!("http://{host}"),
    };
    Ok((base, r.repository.clone(), r.reference().to_string()))
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Renders transfers: a redrawn line per blob on a terminal, a summary line otherwise.
struct Meter {
    tty: bool,
    state: Mutex<(String, u64, u64, Instant, Instant)>,
}

impl Meter {
    fn new() -> Meter {
        let now = Instant::now();
        Meter {
            tty: std::io::stderr().is_terminal(),
            state: Mutex::new((String::new(), 0, 0, now, now)),
        }
    }
    fn line(what: &str, done: u64, total: u64, secs: f64) -> String {
        let rate = if secs > 0.0 { mib(done) / secs } else { 0.0 };
        format!(
            "{what}  {:.1}/{:.1} MiB  {rate:.1} MiB/s",
            mib(done),
            mib(total)
        )
    }
}

impl Progress for Meter {
    fn begin(&self, what: &str, total: u64, skipped: bool) {
        if skipped {
            eprintln!("{what}  already there ({:.1} MiB)", mib(total));
            return;
        }
        let now = Instant::now();
        *self.state.lock().unwrap() = (what.to_string(), total, 0, now, now);
    }
    fn advance(&self, n: u64) {
        let mut st = self.state.lock().unwrap();
        st.2 += n;
        if self.tty && st.4.elapsed().as_millis() >= 100 {
            st.4 = Instant::now();
            let l = Meter::line(&st.0, st.2, st.1, st.3.elapsed().as_secs_f64());
            eprint!("\r\x1b[2K{l}");
            let _ = std::io::stderr().flush();
        }
    }
    fn end(&self) {
        let st = self.state.lock().unwrap();
        if st.0.is_empty() {
            return;
        }
        let l = Meter::line(&st.0, st.2, st.1, st.3.elapsed().as_secs_f64());
        if self.tty {
            eprintln!("\r\x1b[2K{l}");
        } else {
            eprintln!("{l}");
        }
    }
}

/// `berth push SRC DEST`: SRC is `oci:DIR[:TAG]`, DEST an image reference.
pub async fn push(src: &str, dest: &str, endpoint: &str) -> anyhow::Result<()> {
    let (dir, tag) = parse_layout(src);
    let (base, repo, dest_tag) = resolve(dest, endpoint)?;
    if dest_tag.starts_with("sha256:") {
        bail!("push needs a tag in {dest}");
    }
    let client = Client::new(&base, endpoint).with_credentials(crate::client_auth::credentials());
    let digest = client
        .push(&dir, tag.as_deref(), &repo, &dest_tag, &Meter::new())
        .await
        .with_context(|| format!("pushing {src} to {dest}"))?;
    println!("{digest}");
    Ok(())
}

/// `berth pull SRC DEST`: SRC an image reference, DEST `oci:DIR[:TAG]` (tag defaults to the
/// source's tag).
pub async fn pull(src: &str, dest: &str, endpoint: &str) -> anyhow::Result<()> {
    let (base, repo, reference) = resolve(src, endpoint)?;
    let (dir, tag) = parse_layout(dest);
    let tag = tag.unwrap_or_else(|| {
        if reference.starts_with("sha256:") {
            "latest".into()
        } else {
            reference.clone()
        }
    });
    let client = Client::new(&base, endpoint).with_credentials(crate::client_auth::credentials());
    let digest = client
        .pull(&repo, &reference, &dir, &tag, &Meter::new())
        .await
        .with_context(|| format!("pulling {src} into {dest}"))?;
    println!("{digest}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_and_references() {
        assert_eq!(
            parse_layout("oci:/tmp/x:1"),
            (PathBuf::from("/tmp/x"), Some("1".into()))
        );
        assert_eq!(parse_layout("/tmp/x"), (PathBuf::from("/tmp/x"), None));
        let (base, repo, r) = resolve(
            "000000000000.dkr.ecr.us-east-1.amazonaws.com/web:2",
            "http://127.0.0.1:5150",
        )
        .unwrap();
        assert_eq!(
            (base.as_str(), repo.as_str(), r.as_str()),
            ("http://127.0.0.1:5150", "web", "2")
        );
        let (base, _, _) = resolve("127.0.0.1:9/web:2", "http://127.0.0.1:5150").unwrap();
        assert_eq!(base, "http://127.0.0.1:9");
    }
}
