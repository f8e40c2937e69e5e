//! Where an image reference is pulled from, and over what: berth's own registry (no registry
//! named, an ECR host, or the server's own host:port) at the server URL; any other registry
//! over HTTPS, where plain HTTP is allowed only for loopback registries and for those the
//! operator lists with `--insecure-registry HOST[:PORT]`.

use std::net::IpAddr;

use berth_core::image_ref::ImageRef;

/// How the agent may reach a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// berth's own registry, at the server URL the agent takes tasks from.
    Own,
    /// HTTPS only, the certificate verified against the system CA store and `--registry-ca`.
    Https,
    /// HTTPS first (verified the same way; a certificate error is reported, never downgraded);
    /// plain HTTP when the server does not complete a TLS handshake. Loopback registries
    /// (`localhost`, 127.0.0.0/8, `::1`) and those listed with `--insecure-registry`.
    HttpsThenHttp,
}

/// Registries the operator allows over plain HTTP (`--insecure-registry HOST[:PORT]`, like
/// podman's `insecure = true`): an entry with a port matches that host and port, one without
/// matches the host on any port. Host names compare case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InsecureRegistries(Vec<(String, Option<u16>)>);

impl InsecureRegistries {
    /// Parses `HOST[:PORT]` entries (`[v6]:PORT` for IPv6); a scheme, path or empty entry is
    /// an error naming the entry.
    pub fn parse(entries: &[String]) -> Result<InsecureRegistries, String> {
        let mut out = Vec::new();
        for e in entries {
            if !valid_authority(e) {
                return Err(format!(
                    "--insecure-registry {e}: expected HOST or HOST:PORT (no scheme or path), e.g. registry.lan:5000"
                ));
            }
            let has_port = if e.starts_with('[') {
                e.contains("]:")
            } else {
                e.contains(':')
            };
            let (h, p) = split_host_port(e, 0);
            out.push((h, has_port.then_some(p)));
        }
        Ok(InsecureRegistries(out))
    }

    /// Whether `host:port` (lowercase host) is listed.
    pub fn contains(&self, host: &str, port: u16) -> bool {
        self.0
            .iter()
            .any(|(h, p)| h == host && p.is_none_or(|p| p == port))
    }
}

/// A reference resolved to a registry endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Base URL of the registry, without a trailing slash, e.g. `http://127.0.0.1:5150` (own)
    /// or `https://public.ecr.aws`. For [`Transport::HttpsThenHttp`] this is the HTTPS URL;
    /// the puller switches to `http://` once the registry turns out not to speak TLS.
    pub base_url: String,
    /// How the registry may be reached.
    pub transport: Transport,
    /// `host[:port]` of the registry as contacted (lowercase), the key of the puller's
    /// per-registry caches; the server's for [`Transport::Own`].
    pub authority: String,
    pub repository: String,
    /// Tag or digest to fetch.
    pub reference: String,
    /// `sha256:...` when the reference pins a digest.
    pub digest: Option<String>,
    /// `<registry>/<repo>:<tag>` (or `@digest`) as used in error messages.
    pub display: String,
    /// Credentials for the registry's challenge (a task's `repositoryCredentials`).
    pub credentials: Option<berth_registry::client::Credentials>,
}

/// `host:port` of a URL like `http://127.0.0.1:5150/`, with the scheme's default port filled in.
pub fn url_host_port(url: &str) -> (String, u16) {
    let (default_port, rest) = if let Some(r) = url.strip_prefix("https://") {
        (443, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (80, r)
    } else {
        (80, url)
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    split_host_port(authority, default_port)
}

fn split_host_port(authority: &str, default_port: u16) -> (String, u16) {
    if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        if let Some((h, p)) = rest.split_once(']') {
            let port = p
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(default_port);
            return (h.to_ascii_lowercase(), port);
        }
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h.to_ascii_lowercase(), port),
            Err(_) => (authority.to_ascii_lowercase(), default_port),
        },
        _ => (authority.to_ascii_lowercase(), default_port),
    }
}

fn is_loopback_name(h: &str) -> bool {
    h == "localhost" || h == "127.0.0.1" || h == "::1" || h == "0.0.0.0"
}

/// `localhost`, or an address of 127.0.0.0/8, `::1` or the unspecified address (which Linux
/// delivers locally): traffic to these never leaves the host.
pub fn is_loopback_host(h: &str) -> bool {
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// `host[:port]` with a DNS name (letters, digits, `-`, `.`), an IPv4 address or a bracketed
/// IPv6 address, and a port of 1..=65535 when given.
fn valid_authority(a: &str) -> bool {
    let (host_ok, port) = if let Some(rest) = a.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, p)) => (h.parse::<std::net::Ipv6Addr>().is_ok(), p),
            None => return false,
        }
    } else {
        let (h, p) = a.split_at(a.find(':').unwrap_or(a.len()));
        let ok = !h.is_empty()
            && h.len() <= 253
            && !h.starts_with(['-', '.'])
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        (ok, p)
    };
    host_ok
        && (port.is_empty()
            || port.strip_prefix(':').is_some_and(|p| {
                !p.is_empty()
                    && p.chars().all(|c| c.is_ascii_digit())
                    && p.parse::<u16>().is_ok_and(|n| n > 0)
            }))
}

/// Resolves `image` (as written in a task definition) against the server at `server_url`;
/// registries in `insecure` (and loopback ones) may be reached over plain HTTP.
pub fn resolve(
    image: &str,
    server_url: &str,
    insecure: &InsecureRegistries,
) -> Result<Resolved, String> {
    let mut r = ImageRef::parse(image)?;
    let server = server_url.trim_end_matches('/').to_string();
    let (server_host, server_port) = url_host_port(&server);
    let own = (
        server.clone(),
        Transport::Own,
        format!("{server_host}:{server_port}"),
    );
    let (base_url, transport, authority) = match &r.registry {
        None => own,
        Some(_) if r.is_ecr_host() => own,
        Some(reg) => {
            if !valid_authority(reg) {
                return Err(format!(
                    "invalid registry host {reg:?} in reference {image:?}"
                ));
            }
            let (h, p) = split_host_port(reg, 80);
            let ours = p == server_port
                && (h == server_host || (is_loopback_name(&h) && is_loopback_name(&server_host)));
            if ours {
                own
            } else {
                let mut authority = reg.to_ascii_lowercase();
                // Docker Hub's registry API is served at registry-1.docker.io, and its
                // single-name repositories live under library/.
                if matches!(authority.as_str(), "docker.io" | "index.docker.io") {
                    authority = "registry-1.docker.io".into();
                    if !r.repository.contains('/') {
                        r.repository = format!("library/{}", r.repository);
                    }
                }
                let (h, p) = split_host_port(&authority, 443);
                let transport = if is_loopback_host(&h) || insecure.contains(&h, p) {
                    Transport::HttpsThenHttp
                } else {
                    Transport::Https
                };
                (format!("https://{authority}"), transport, authority)
            }
        }
    };
    let registry_display = match &r.registry {
        Some(reg) => reg.clone(),
        None => format!("{server_host}:{server_port}"),
    };
    let display = match (&r.digest, &r.tag) {
        (Some(d), Some(t)) => format!("{registry_display}/{}:{t}@{d}", r.repository),
        (Some(d), None) => format!("{registry_display}/{}@{d}", r.repository),
        (None, t) => format!(
            "{registry_display}/{}:{}",
            r.repository,
            t.as_deref().unwrap_or("latest")
        ),
    };
    Ok(Resolved {
        base_url,
        transport,
        authority,
        reference: r.reference().to_string(),
        digest: r.digest.clone(),
        repository: r.repository,
        display,
        credentials: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "http://127.0.0.1:5150";

    fn resolve(image: &str, server: &str) -> Result<Resolved, String> {
        super::resolve(image, server, &InsecureRegistries::default())
    }

    #[test]
    fn bare_name_goes_to_server() {
        let r = resolve("web:1", S).unwrap();
        assert_eq!(r.base_url, S);
        assert_eq!(r.repository, "web");
        assert_eq!(r.reference, "1");
        assert_eq!(r.display, "127.0.0.1:5150/web:1");
        let r = resolve("team/web", S).unwrap();
        assert_eq!(r.reference, "latest");
    }

    #[test]
    fn ecr_host_goes_to_server() {
        let r = resolve("000000000000.dkr.ecr.us-east-1.amazonaws.com/web:2", S).unwrap();
        assert_eq!(r.base_url, S);
        assert_eq!(
            r.display,
            "000000000000.dkr.ecr.us-east-1.amazonaws.com/web:2"
        );
    }

    #[test]
    fn own_host_and_loopback_aliases() {
        for img in [
            "127.0.0.1:5150/web:1",
            "localhost:5150/web:1",
            "LOCALHOST:5150/web:1",
        ] {
            assert_eq!(resolve(img, S).unwrap().base_url, S, "{img}");
        }
        assert_eq!(
            resolve("localhost:5150/web:1", S).unwrap().transport,
            Transport::Own
        );
        let r = resolve("berth.example:8080/web:1", "http://berth.example:8080/").unwrap();
        assert_eq!(r.base_url, "http://berth.example:8080");
        let r = resolve("localhost/web", "http://localhost").unwrap();
        assert_eq!(r.base_url, "http://localhost");
    }

    #[test]
    fn loopback_registries_try_https_first() {
        for (img, auth) in [
            ("localhost:5000/web:1", "localhost:5000"),
            ("127.0.0.1:5000/web:1", "127.0.0.1:5000"),
            ("127.0.0.2:5150/web:1", "127.0.0.2:5150"),
            ("[::1]:5000/web:1", "[::1]:5000"),
        ] {
            let r = resolve(img, S).unwrap();
            assert_eq!(r.base_url, format!("https://{auth}"), "{img}");
            assert_eq!(r.transport, Transport::HttpsThenHttp, "{img}");
            assert_eq!(r.authority, auth);
        }
    }

    #[test]
    fn other_hosts_https_only() {
        let r = resolve("registry.example.com/a/b@sha256:abcd", S).unwrap();
        assert_eq!(r.base_url, "https://registry.example.com");
        assert_eq!(r.transport, Transport::Https);
        assert_eq!(r.reference, "sha256:abcd");
        assert_eq!(r.digest.as_deref(), Some("sha256:abcd"));
        assert_eq!(r.display, "registry.example.com/a/b@sha256:abcd");
        let r = resolve("public.ecr.aws/docker/library/httpd:latest", S).unwrap();
        assert_eq!(r.base_url, "https://public.ecr.aws");
        assert_eq!(r.repository, "docker/library/httpd");
        // A name that only looks local is not.
        let r = resolve("localhost.example.com/web:1", S).unwrap();
        assert_eq!(r.transport, Transport::Https);
        let r = resolve("docker.io/httpd", S).unwrap();
        assert_eq!(r.base_url, "https://registry-1.docker.io");
        assert_eq!(r.repository, "library/httpd");
        assert_eq!(r.display, "docker.io/library/httpd:latest");
    }

    #[test]
    fn insecure_registries_listed_by_the_operator() {
        let list = InsecureRegistries::parse(&[
            "reg.lan:5000".to_string(),
            "Other.LAN".to_string(),
            "10.0.0.5:80".to_string(),
        ])
        .unwrap();
        let t = |img: &str| super::resolve(img, S, &list).unwrap().transport;
        assert_eq!(t("reg.lan:5000/a:1"), Transport::HttpsThenHttp);
        assert_eq!(t("reg.lan:5001/a:1"), Transport::Https);
        assert_eq!(t("reg.lan/a:1"), Transport::Https);
        assert_eq!(t("other.lan:1234/a:1"), Transport::HttpsThenHttp);
        assert_eq!(t("other.lan/a:1"), Transport::HttpsThenHttp);
        assert_eq!(t("10.0.0.5:80/a:1"), Transport::HttpsThenHttp);
        assert_eq!(t("10.0.0.5/a:1"), Transport::Https);
        for bad in [
            "http://reg.lan",
            "reg.lan/x",
            "",
            "reg.lan:0",
            "reg.lan:x",
            "a b",
            "[zz]:1",
        ] {
            assert!(
                InsecureRegistries::parse(&[bad.to_string()]).is_err(),
                "{bad:?}"
            );
        }
        assert!(InsecureRegistries::parse(&["[fd00::1]:5000".to_string()]).is_ok());
    }

    #[test]
    fn hostile_registry_hosts_are_refused() {
        for img in [
            "a.b?x=1/web:1",
            "a.b#f/web:1",
            "a.b%2f/web:1",
            "a.b:99999/web:1",
        ] {
            assert!(resolve(img, S).is_err(), "{img}");
        }
    }

    #[test]
    fn host_port_parsing() {
        assert_eq!(
            url_host_port("http://127.0.0.1:5150"),
            ("127.0.0.1".into(), 5150)
        );
        assert_eq!(
            url_host_port("http://example.com/x"),
            ("example.com".into(), 80)
        );
        assert_eq!(url_host_port("http://[::1]:9/"), ("::1".into(), 9));
    }

    #[test]
    fn invalid() {
        assert!(resolve("Bad Name", S).is_err());
    }
}
