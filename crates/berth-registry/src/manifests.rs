//! Manifest parsing and validation (OCI image-spec v1.1 manifest and index; Docker image manifest
//! v2 schema 2 and manifest list). Parsing gives what the registry must check before accepting a
//! manifest: the blobs an image manifest references (config + layers), the manifests an index
//! references, and the `subject` for the referrers API.

use serde_json::Value;

use crate::digest::Digest;
use crate::RegistryError;

/// `application/vnd.oci.image.manifest.v1+json`
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// `application/vnd.oci.image.index.v1+json`
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// `application/vnd.docker.distribution.manifest.v2+json`
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// `application/vnd.docker.distribution.manifest.list.v2+json`
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest accepted (the spec asks for at least 4 MiB); larger gives HTTP 413.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Whether a manifest is an image manifest or an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// OCI image manifest / Docker schema 2 manifest: references blobs.
    Image,
    /// OCI image index / Docker manifest list: references manifests.
    Index,
}

/// A content descriptor (`{mediaType, digest, size, urls?}`).
#[derive(Debug, Clone)]
pub struct Descriptor {
    pub media_type: Option<String>,
    pub digest: Digest,
    pub size: u64,
    /// Non-distributable ("foreign") layers carry URLs and need not be in the registry.
    pub foreign: bool,
}

/// What a parsed manifest says.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The media type to store and serve: the request's Content-Type when given, else the
    /// manifest's own `mediaType`.
    pub media_type: String,
    pub kind: Kind,
    /// Image: config first, then layers. Index: the manifests.
    pub references: Vec<Descriptor>,
    pub subject: Option<Digest>,
    /// `artifactType`, or for image manifests without it the config media type.
    pub artifact_type: Option<String>,
}

fn invalid(msg: impl Into<String>) -> RegistryError {
    RegistryError::ManifestInvalid(msg.into())
}

/// The kind a known manifest media type (parameters after `;` ignored) denotes.
pub fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type.split(';').next().unwrap_or("").trim() {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Image),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Some(Kind::Index),
        _ => None,
    }
}

fn descriptor(v: &Value, what: &str) -> Result<Descriptor, RegistryError> {
    let obj = v
        .as_object()
        .ok_or_else(|| invalid(format!("{what} is not a descriptor object")))?;
    let digest = obj
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{what} has no digest")))?;
    let digest = Digest::parse(digest)?;
    let size = obj
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid(format!("{what} has no valid size")))?;
    let foreign = obj
        .get("urls")
        .and_then(Value::as_array)
        .is_some_and(|u| !u.is_empty());
    Ok(Descriptor {
        media_type: obj
            .get("mediaType")
            .and_then(Value::as_str)
            .map(str::to_string),
        digest,
        size,
        foreign,
    })
}

/// Parses and validates manifest `bytes` pushed with `content_type` (the raw header, if any).
/// Errors: `ManifestInvalid` for bad JSON, unknown or contradictory media types and missing
/// fields; `DigestInvalid` for malformed digests in descriptors.
pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<Manifest, RegistryError> {
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| invalid("not a JSON object"))?;
    if obj.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    let field = obj.get("mediaType").and_then(Value::as_str);
    let header = content_type.map(str::trim).filter(|h| !h.is_empty());
    let header_base = header.map(|h| h.split(';').next().unwrap_or(h).trim());
    let media_type = match (header, field) {
        (Some(h), _) => h.to_string(),
        (None, Some(f)) => f.to_string(),
        (None, None) => return Err(invalid("no media type (Content-Type or mediaType)")),
    };
    let header_kind = header_base.and_then(kind_of);
    let field_kind = field.and_then(kind_of);
    if let (Some(h), Some(f)) = (header_base, field) {
        if header_kind.is_some() && field_kind.is_some() && h != f {
            return Err(invalid(format!(
                "Content-Type {h} does not match mediaType {f}"
            )));
        }
    }
    let kind = match header_kind.or(field_kind) {
        Some(k) => k,
        None if media_type.contains("manifest.v1") => {
            return Err(invalid("Docker schema 1 manifests are not supported"))
        }
        None if obj.contains_key("manifests") => Kind::Index,
        None if obj.contains_key("config") => Kind::Image,
        None => {
            return Err(invalid(format!(
                "unsupported manifest media type {media_type}"
            )))
        }
    };
    let mut references = Vec::new();
    let mut artifact_type = obj
        .get("artifactType")
        .and_then(Value::as_str)
        .map(str::to_string);
    match kind {
        Kind::Image => {
            let config = obj
                .get("config")
                .ok_or_else(|| invalid("image manifest has no config"))?;
            let config = descriptor(config, "config")?;
            if artifact_type.is_none() {
                artifact_type = config.media_type.clone();
            }
            references.push(config);
            let layers = obj
                .get("layers")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("image manifest has no layers array"))?;
            for (i, l) in layers.iter().enumerate() {
                references.push(descriptor(l, &format!("layers[{i}]"))?);
            }
        }
        Kind::Index => {
            let manifests = obj
                .get("manifests")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("index has no manifests array"))?;
            for (i, m) in manifests.iter().enumerate() {
                references.push(descriptor(m, &format!("manifests[{i}]"))?);
            }
        }
    }
    let subject = match obj.get("subject") {
        Some(s) => Some(descriptor(s, "subject")?.digest),
        None => None,
    };
    Ok(Manifest {
        media_type,
        kind,
        references,
        subject,
        artifact_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn image_and_index() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":3}}]}}"#,
            d('a'),
            d('b')
        );
        let p = parse(None, m.as_bytes()).unwrap();
        assert_eq!(p.kind, Kind::Image);
        assert_eq!(p.media_type, OCI_MANIFEST);
        assert_eq!(p.references.len(), 2);
        assert_eq!(
            p.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        // Header wins and is kept verbatim; a contradicting known type is rejected.
        assert_eq!(
            parse(Some(OCI_MANIFEST), m.as_bytes()).unwrap().media_type,
            OCI_MANIFEST
        );
        assert!(matches!(
            parse(Some(DOCKER_MANIFEST), m.as_bytes()),
            Err(RegistryError::ManifestInvalid(_))
        ));
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":9}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1}}}}"#,
            d('c'),
            d('e')
        );
        let p = parse(Some(DOCKER_MANIFEST_LIST), i.as_bytes()).unwrap();
        assert_eq!(p.kind, Kind::Index);
        assert_eq!(p.subject.unwrap().to_string(), d('e'));
    }

    #[test]
    fn rejects() {
        let bad: &[(&str, &str)] = &[
            ("not json", "{"),
            ("array", "[]"),
            ("schema 1", r#"{"schemaVersion":1}"#),
            ("no type", r#"{"schemaVersion":2,"layers":[]}"#),
            (
                "no config",
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#,
            ),
        ];
        for (what, body) in bad {
            assert!(
                matches!(
                    parse(None, body.as_bytes()),
                    Err(RegistryError::ManifestInvalid(_))
                ),
                "{what}"
            );
        }
        let bad_digest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"digest":"sha256:nothex","size":2}},"layers":[]}}"#
        );
        assert!(matches!(
            parse(None, bad_digest.as_bytes()),
            Err(RegistryError::DigestInvalid(_))
        ));
    }
}
