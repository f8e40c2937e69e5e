//! Image references (`[registry/]repository[:tag][@digest]`, the OCI distribution naming rules)
//! and how berth resolves AWS ECR hostnames to its own registry.

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]`, or `None` when the reference names no registry.
    pub registry: Option<String>,
    /// Repository path, e.g. `web` or `team/web`.
    pub repository: String,
    /// Tag, or `None` (then `latest` unless a digest is given).
    pub tag: Option<String>,
    /// `sha256:<hex>` when pinned.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses a reference. Errors name what is wrong.
    pub fn parse(s: &str) -> Result<ImageRef, String> {
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(format!("invalid reference format: {s:?}"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                if !d.contains(':') {
                    return Err(format!("invalid digest in reference {s:?}"));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, p))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (Some(first.to_string()), p)
            }
            _ => (None, rest),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), Some(t.to_string())),
            _ => (path.to_string(), None),
        };
        if repository.is_empty()
            || repository
                .chars()
                .any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c)))
        {
            return Err(format!("invalid repository name in reference {s:?}"));
        }
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The manifest reference to fetch: the digest when pinned, else the tag, else `latest`.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// True when this reference names an ECR registry host
    /// (`<account>.dkr.ecr.<region>.amazonaws.com`, any account and region), which berth serves
    /// itself.
    pub fn is_ecr_host(&self) -> bool {
        self.registry.as_deref().is_some_and(|h| {
            let h = h.split(':').next().unwrap_or(h);
            h.contains(".dkr.ecr.")
                && (h.ends_with(".amazonaws.com") || h.ends_with(".amazonaws.com.cn"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let r = ImageRef::parse("000000000000.dkr.ecr.us-east-1.amazonaws.com/web:1").unwrap();
        assert!(r.is_ecr_host());
        assert_eq!(r.repository, "web");
        assert_eq!(r.reference(), "1");
        let r = ImageRef::parse("127.0.0.1:5150/team/web@sha256:abc").unwrap();
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5150"));
        assert_eq!(r.repository, "team/web");
        assert_eq!(r.reference(), "sha256:abc");
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!((r.registry.as_deref(), r.reference()), (None, "latest"));
        assert!(ImageRef::parse("Bad Name").is_err());
    }
}
