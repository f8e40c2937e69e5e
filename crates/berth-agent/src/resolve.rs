//! Where an image reference is pulled from: berth's own registry (no registry named, an ECR
//! host, or the server's own host:port) or another registry over plain HTTP.

use berth_core::image_ref::ImageRef;

/// A reference resolved to a registry endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Base URL of the registry, without a trailing slash, e.g. `http://127.0.0.1:5150`.
    pub base_url: String,
    pub repository: String,
    /// Tag or digest to fetch.
    pub reference: String,
    /// `sha256:...` when the reference pins a digest.
    pub digest: Option<String>,
    /// `<registry>/<repo>:<tag>` (or `@digest`) as used in error messages.
    pub display: String,
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

/// Resolves `image` (as written in a task definition) against the server at `server_url`.
pub fn resolve(image: &str, server_url: &str) -> Result<Resolved, String> {
    let r = ImageRef::parse(image)?;
    let server = server_url.trim_end_matches('/').to_string();
    let (server_host, server_port) = url_host_port(&server);
    let base_url = match &r.registry {
        None => server.clone(),
        Some(_) if r.is_ecr_host() => server.clone(),
        Some(reg) => {
            let (h, p) = split_host_port(reg, 80);
            let ours = p == server_port
                && (h == server_host || (is_loopback_name(&h) && is_loopback_name(&server_host)));
            if ours {
                server.clone()
            } else {
                format!("http://{reg}")
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
        reference: r.reference().to_string(),
        digest: r.digest.clone(),
        repository: r.repository,
        display,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "http://127.0.0.1:5150";

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
        let r = resolve("localhost:5000/web:1", S).unwrap();
        assert_eq!(r.base_url, "http://localhost:5000");
        let r = resolve("berth.example:8080/web:1", "http://berth.example:8080/").unwrap();
        assert_eq!(r.base_url, "http://berth.example:8080");
        let r = resolve("localhost/web", "http://localhost").unwrap();
        assert_eq!(r.base_url, "http://localhost");
    }

    #[test]
    fn other_hosts_plain_http() {
        let r = resolve("registry.example.com/a/b@sha256:abcd", S).unwrap();
        assert_eq!(r.base_url, "http://registry.example.com");
        assert_eq!(r.reference, "sha256:abcd");
        assert_eq!(r.digest.as_deref(), Some("sha256:abcd"));
        assert_eq!(r.display, "registry.example.com/a/b@sha256:abcd");
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
