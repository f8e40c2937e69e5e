//! How the agent connects to registries: the pull HTTP client (rustls with the system's CA
//! store plus `--registry-ca` files), which hosts may be spoken to over plain HTTP, and how a
//! failed connection reads in a `CannotPullContainerError` (containerd's wording: `failed to do
//! request: Get "<url>": <cause>`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::resolve::{is_loopback_host, url_host_port, InsecureRegistries, Transport};

/// Registry access settings of an agent (`berth server` / `berth agent` flags).
#[derive(Debug, Clone, Default)]
pub struct PullConfig {
    /// PEM files of CA certificates trusted for registries in addition to the system's CA
    /// store (`--registry-ca FILE`, repeatable; a file may hold several certificates).
    pub registry_ca: Vec<PathBuf>,
    /// Registries that may be reached over plain HTTP besides loopback ones
    /// (`--insecure-registry HOST[:PORT]`, repeatable).
    pub insecure_registries: Vec<String>,
}

impl PullConfig {
    /// Parses `insecure_registries`; the error names the bad entry.
    pub fn insecure(&self) -> Result<InsecureRegistries, String> {
        InsecureRegistries::parse(&self.insecure_registries)
    }

    /// Reads the `registry_ca` files; the error names the file and what is wrong with it.
    fn certificates(&self) -> Result<Vec<reqwest::Certificate>, String> {
        let mut out = Vec::new();
        for p in &self.registry_ca {
            let pem =
                std::fs::read(p).map_err(|e| format!("--registry-ca {}: {e}", p.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("--registry-ca {}: {e}", p.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "--registry-ca {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file",
                    p.display()
                ));
            }
            out.extend(certs);
        }
        Ok(out)
    }

    /// Builds the HTTP client images are pulled with: HTTPS verified against the system's CA
    /// store and the `registry_ca` certificates; redirects (at most 10) never go from HTTPS
    /// to plain HTTP unless the target may be spoken to over plain HTTP.
    pub(crate) fn client(&self) -> Result<reqwest::Client, String> {
        let insecure = Arc::new(self.insecure()?);
        let mut b = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 10 {
                    return attempt.error("stopped after 10 redirects");
                }
                let next = attempt.url();
                let ok = match next.scheme() {
                    "https" => true,
                    "http" => plain_http_allowed(&insecure, next.as_str()),
                    _ => false,
                };
                if ok {
                    attempt.follow()
                } else {
                    let msg = format!("refusing a redirect to {next}: not HTTPS");
                    attempt.error(msg)
                }
            }));
        for c in self.certificates()? {
            b = b.add_root_certificate(c);
        }
        b.build()
            .map_err(|e| format!("registry client: {}", innermost(&e)))
    }
}

/// Whether the host of `url` may be spoken to over plain HTTP (loopback, or listed).
pub(crate) fn plain_http_allowed(insecure: &InsecureRegistries, url: &str) -> bool {
    let (host, port) = url_host_port(url);
    is_loopback_host(&host) || insecure.contains(&host, port)
}

/// What kind of connection failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The server's certificate did not verify (unknown issuer, wrong name, expired...).
    Certificate,
    /// The server answered the TLS handshake with something that is not TLS (a plain-HTTP
    /// server answers `HTTP/1.1 400 ...`).
    NotTls,
    /// Another TLS handshake failure (alert, EOF during the handshake).
    Tls,
    /// Anything else (refused, timed out, reset, DNS).
    Other,
}

/// The innermost cause of `e` (e.g. `Connection refused (os error 111)`).
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        last = c.to_string();
        // io::Error hides its inner error from source(); look through it.
        cur = match c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => inner.source(),
            None => c.source(),
        };
    }
    last
}

/// Finds the TLS error (if any) behind `e` and says what kind of failure it is; the string
/// is the innermost cause.
pub(crate) fn classify(e: &reqwest::Error) -> (Failure, String) {
    let mut kind = Failure::Other;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut innermost = e.to_string();
    let tls_kind = |t: &rustls::Error| match t {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            Failure::Certificate
        }
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            Failure::NotTls
        }
        _ => Failure::Tls,
    };
    while let Some(c) = cur {
        innermost = c.to_string();
        if let Some(t) = c.downcast_ref::<rustls::Error>() {
            kind = tls_kind(t);
            break;
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                kind = tls_kind(t);
                innermost = t.to_string();
                break;
            }
            if io.kind() == std::io::ErrorKind::UnexpectedEof
                && e.url().is_some_and(|u| u.scheme() == "https")
            {
                kind = Failure::Tls;
            }
            cur = io
                .get_ref()
                .map(|i| i as &(dyn std::error::Error + 'static));
            continue;
        }
        cur = c.source();
    }
    (kind, innermost)
}

/// A connection failure as it reads in a `CannotPullContainerError`, with what to do about it:
/// a certificate error suggests `--registry-ca`, a registry that does not speak TLS (and may
/// not be spoken to over plain HTTP) suggests `--insecure-registry`.
pub(crate) fn describe(e: &reqwest::Error, transport: Transport, authority: &str) -> String {
    let (kind, cause) = classify(e);
    let req = match e.url() {
        Some(u) => format!("failed to do request: Get {:?}: ", u.as_str()),
        None => "failed to do request: ".to_string(),
    };
    match kind {
        Failure::Certificate => format!(
            "{req}tls: failed to verify certificate: {cause} (to trust a private CA, start berth with --registry-ca FILE)"
        ),
        Failure::NotTls if transport == Transport::Https => format!(
            "{req}http: server gave HTTP response to HTTPS client; berth pulls over HTTPS from every registry but loopback ones: to allow plain HTTP, start berth with --insecure-registry {authority}"
        ),
        Failure::NotTls => format!("{req}http: server gave HTTP response to HTTPS client"),
        Failure::Tls if transport == Transport::Https => format!(
            "{req}tls handshake failed: {cause}; if {authority} serves plain HTTP, start berth with --insecure-registry {authority}"
        ),
        Failure::Tls => format!("{req}tls handshake failed: {cause}"),
        Failure::Other => format!("{req}{}", innermost(e)),
    }
}
