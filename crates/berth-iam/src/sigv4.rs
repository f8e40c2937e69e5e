//! AWS Signature Version 4: verification of signed requests and a signer for berth's clients.
//!
//! Canonical request (AWS General Reference, "Create a canonical request"):
//! `METHOD \n URI \n QUERY \n HEADERS \n SIGNED-HEADERS \n PAYLOAD-HASH`, where URI is the
//! request path with dot segments removed, URI-encoded once more (so `%` becomes `%25`, as
//! every service but S3 does); QUERY is the `key=value` pairs decoded, re-encoded (unreserved
//! characters kept, everything else `%XX`) and sorted (the presigned form leaves out
//! `X-Amz-Signature`); HEADERS are the signed headers, lowercase, values trimmed with inner
//! runs of spaces collapsed and repeated headers joined by `,`; PAYLOAD-HASH is
//! `x-amz-content-sha256` when sent (`UNSIGNED-PAYLOAD` or the hex SHA-256 of the body, which
//! is then checked) or else the hex SHA-256 of the body. Presigned URLs may also be signed
//! over `UNSIGNED-PAYLOAD`.
//!
//! Time: the header form's `X-Amz-Date` must be within 15 minutes of the server's clock; the
//! query form's `X-Amz-Date` must not be more than 15 minutes ahead and the request must come
//! before `X-Amz-Date + X-Amz-Expires` (1..=604800 s).

use std::time::SystemTime;

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::time::{format_amz_date, parse_amz_date, unix};
use crate::{AccessKey, AuthError, Caller, Credentials};

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The payload hash that leaves the body out of the signature.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// How far `X-Amz-Date` may be from the server's clock (seconds).
pub const MAX_SKEW_SECS: i64 = 15 * 60;
/// The longest `X-Amz-Expires` (7 days).
pub const MAX_EXPIRES_SECS: i64 = 604_800;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], msg: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(msg);
    m
}

/// The parts of an HTTP request that SigV4 covers.
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path as sent on the wire (still percent-encoded).
    pub path: &'a str,
    /// The raw query string after `?`, if any.
    pub query: Option<&'a str>,
    /// All request headers.
    pub headers: &'a HeaderMap,
}

/// Percent-encodes `s`, keeping RFC 3986 unreserved characters (and `/` when `slash`).
fn uri_encode(s: &[u8], slash: bool, out: &mut String) {
    for &b in s {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Removes `.` and `..` segments (RFC 3986 §5.2.4), keeping a trailing slash.
fn normalize_path(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/').skip(1) {
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut p = format!("/{}", out.join("/"));
    if (path.ends_with("/.") || path.ends_with("/..")) && !p.ends_with('/') {
        p.push('/');
    }
    p
}

/// The canonical query string; `skip_signature` leaves out `X-Amz-Signature`.
fn canonical_query(query: Option<&str>, skip_signature: bool) -> String {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let (mut ek, mut ev) = (String::new(), String::new());
        uri_encode(&percent_decode(k), false, &mut ek);
        uri_encode(&percent_decode(v), false, &mut ev);
        if skip_signature && ek == "X-Amz-Signature" {
            continue;
        }
        pairs.push((ek, ev));
    }
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn header_value(headers: &HeaderMap, name: &str) -> String {
    headers
        .get_all(name)
        .iter()
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The canonical request of `req` over `signed_headers` (lowercase names) and `payload_hash`.
fn canonical_request(
    req: &Request,
    signed_headers: &[&str],
    payload_hash: &str,
    presigned: bool,
) -> String {
    let mut uri = String::new();
    uri_encode(normalize_path(req.path).as_bytes(), true, &mut uri);
    let mut out = format!(
        "{}\n{uri}\n{}\n",
        req.method,
        canonical_query(req.query, presigned)
    );
    for h in signed_headers {
        out.push_str(h);
        out.push(':');
        out.push_str(&header_value(req.headers, h));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    out
}

/// The signing key `kSigning` of a secret and scope `date/region/service`.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes()).finalize();
    let k = hmac(&k.into_bytes(), region.as_bytes()).finalize();
    let k = hmac(&k.into_bytes(), service.as_bytes()).finalize();
    hmac(&k.into_bytes(), b"aws4_request")
        .finalize()
        .into_bytes()
        .to_vec()
}

fn string_to_sign(amz_date: &str, scope: &str, canonical: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    )
}

/// What a request's SigV4 parts say, from either form.
struct Parsed<'a> {
    access_key: &'a str,
    /// `date/region/service/aws4_request`.
    scope: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
    amz_date: String,
    /// Presigned: `X-Amz-Expires`.
    expires: Option<i64>,
}

fn incomplete(m: &str) -> AuthError {
    AuthError::Incomplete(m.to_string())
}

fn parse_credential(cred: &str) -> Result<(&str, &str, &str, &str, &str), AuthError> {
    let (key, scope) = cred
        .split_once('/')
        .ok_or_else(|| incomplete("Credential should be scoped to a valid region, not ''. "))?;
    let parts: Vec<&str> = scope.split('/').collect();
    if parts.len() != 4 || parts[3] != "aws4_request" || parts[0].len() != 8 {
        return Err(incomplete(&format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{}'.",
            parts.last().unwrap_or(&"")
        )));
    }
    Ok((key, scope, parts[0], parts[1], parts[2]))
}

/// Reads the header form (`Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
/// Signature=...` with `X-Amz-Date`).
fn parse_header<'a>(auth: &'a str, headers: &'a HeaderMap) -> Result<Parsed<'a>, AuthError> {
    let rest = auth
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| {
            incomplete(&format!(
                "Authorization header requires the '{ALGORITHM}' algorithm."
            ))
        })?;
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for p in rest.split(',').map(str::trim) {
        if let Some(v) = p.strip_prefix("Credential=") {
            cred = Some(v);
        } else if let Some(v) = p.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = p.strip_prefix("Signature=") {
            sig = Some(v);
        }
    }
    let need = |name: &str| {
        incomplete(&format!(
            "Authorization header requires '{name}' parameter. Authorization={auth}"
        ))
    };
    let cred = cred.ok_or_else(|| need("Credential"))?;
    let signed = signed.ok_or_else(|| need("SignedHeaders"))?;
    let signature = sig.ok_or_else(|| need("Signature"))?;
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
        })?
        .to_string();
    let (access_key, scope, date, region, service) = parse_credential(cred)?;
    Ok(Parsed {
        access_key,
        scope,
        date,
        region,
        service,
        signed_headers: signed.split(';').collect(),
        signature,
        amz_date,
        expires: None,
    })
}

/// Reads the presigned query form (`X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`,
/// `X-Amz-SignedHeaders`, `X-Amz-Signature`, `X-Amz-Expires`).
fn parse_query(pairs: &[(String, String)]) -> Result<Parsed<'_>, AuthError> {
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| {
                incomplete(&format!(
                    "AWS query-string parameters must include '{k}'. Re-examine the query-string parameters."
                ))
            })
    };
    if get("X-Amz-Algorithm")? != ALGORITHM {
        return Err(incomplete(&format!(
            "X-Amz-Algorithm only supports '{ALGORITHM}'"
        )));
    }
    let (access_key, scope, date, region, service) = parse_credential(get("X-Amz-Credential")?)?;
    let expires: i64 = get("X-Amz-Expires")?
        .parse()
        .ok()
        .filter(|e| (1..=MAX_EXPIRES_SECS).contains(e))
        .ok_or_else(|| incomplete("X-Amz-Expires must be a number of seconds from 1 to 604800."))?;
    Ok(Parsed {
        access_key,
        scope,
        date,
        region,
        service,
        signed_headers: get("X-Amz-SignedHeaders")?.split(';').collect(),
        signature: get("X-Amz-Signature")?,
        amz_date: get("X-Amz-Date")?.to_string(),
        expires: Some(expires),
    })
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| p.starts_with("X-Amz-"))
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                String::from_utf8_lossy(&percent_decode(k)).into_owned(),
                String::from_utf8_lossy(&percent_decode(v)).into_owned(),
            )
        })
        .collect()
}

/// Whether the request carries SigV4 at all (an `Authorization` header or `X-Amz-Signature`).
pub fn is_signed(req: &Request) -> bool {
    req.headers.contains_key(http::header::AUTHORIZATION)
        || req
            .query
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("X-Amz-Signature=")))
}

impl Credentials {
    /// Verifies `req` (whose body is `body`) and returns who signed it. Hashes the body at most
    /// once, and not at all when the request is signed over `UNSIGNED-PAYLOAD`. Under
    /// [`Credentials::insecure_any`] every request passes.
    pub fn verify(&self, req: &Request, body: &[u8], now: SystemTime) -> Result<Caller, AuthError> {
        let auth = req
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let pairs = query_pairs(req.query);
        let presigned = auth.is_none() && pairs.iter().any(|(k, _)| k == "X-Amz-Signature");
        if self.accepts_any() {
            let key = auth
                .as_deref()
                .and_then(|a| parse_header(a, req.headers).ok())
                .map(|p| p.access_key.to_string())
                .unwrap_or_else(|| "anonymous".into());
            return Ok(Caller {
                account_id: self.account_id().to_string(),
                access_key_id: key,
            });
        }
        let p = match &auth {
            Some(a) => parse_header(a, req.headers)?,
            None if presigned => parse_query(&pairs)?,
            None => return Err(AuthError::Missing),
        };
        let signed_at = parse_amz_date(&p.amz_date).ok_or_else(|| {
            incomplete(&format!(
                "Date must be in ISO-8601 'basic format'. Got '{}'. See http://en.wikipedia.org/wiki/ISO_8601",
                p.amz_date
            ))
        })?;
        if !p.amz_date.starts_with(p.date) {
            return Err(AuthError::SignatureMismatch);
        }
        if p.signed_headers.is_empty()
            || !p.signed_headers.contains(&"host")
            || p.signed_headers
                .iter()
                .any(|h| h.is_empty() || h.bytes().any(|c| c.is_ascii_uppercase()))
        {
            return Err(incomplete(
                "'Host' must be a signed header and SignedHeaders lowercase names separated by ';'.",
            ));
        }
        let key = self.lookup(p.access_key).ok_or(AuthError::UnknownKey)?;
        let now_s = unix(now);
        if signed_at > now_s + MAX_SKEW_SECS {
            return Err(AuthError::NotYetCurrent {
                signed: p.amz_date.clone(),
                latest: format_amz_date(now_s + MAX_SKEW_SECS),
                now: format_amz_date(now_s),
            });
        }
        let (earliest, window) = match p.expires {
            None => (now_s - MAX_SKEW_SECS, "15 min.".to_string()),
            Some(e) => (now_s - e, format!("{e} sec.")),
        };
        if signed_at < earliest {
            return Err(AuthError::Expired {
                signed: p.amz_date.clone(),
                earliest: format_amz_date(earliest),
                now: format_amz_date(now_s),
                window,
            });
        }
        let body_hash = || hex::encode(Sha256::digest(body));
        let mut candidates: Vec<String> = Vec::with_capacity(2);
        match req
            .headers
            .get("x-amz-content-sha256")
            .and_then(|v| v.to_str().ok())
        {
            Some(UNSIGNED_PAYLOAD) => candidates.push(UNSIGNED_PAYLOAD.into()),
            Some(h) => {
                let actual = body_hash();
                if !h.eq_ignore_ascii_case(&actual) {
                    return Err(AuthError::ContentSha256Mismatch);
                }
                candidates.push(h.to_string());
            }
            None => {
                candidates.push(body_hash());
                if presigned {
                    candidates.push(UNSIGNED_PAYLOAD.into());
                }
            }
        }
        let Ok(provided) = hex::decode(p.signature) else {
            return Err(AuthError::SignatureMismatch);
        };
        let k = signing_key(&key.secret_access_key, p.date, p.region, p.service);
        for payload in &candidates {
            let canonical = canonical_request(req, &p.signed_headers, payload, presigned);
            let sts = string_to_sign(&p.amz_date, p.scope, &canonical);
            // Constant-time comparison.
            if hmac(&k, sts.as_bytes()).verify_slice(&provided).is_ok() {
                return Ok(Caller {
                    account_id: key.account_id.clone(),
                    access_key_id: key.access_key_id.clone(),
                });
            }
        }
        let _ = (p.region, p.service);
        Err(AuthError::SignatureMismatch)
    }
}

/// Signs an awsJson 1.1 call (`POST /`, `X-Amz-Target: target`, `Content-Type:
/// application/x-amz-json-1.1`) of `body` to the server at `endpoint` (`http[s]://host[:port][/...]`),
/// as `service` in `us-east-1`, now: the headers to add ([`sign`]'s).
pub fn sign_json_call(
    key: &AccessKey,
    endpoint: &str,
    service: &str,
    target: &str,
    body: &[u8],
) -> Vec<(String, String)> {
    let host = endpoint.split_once("://").map_or(endpoint, |(_, h)| h);
    let host = host.split('/').next().unwrap_or(host);
    sign(
        key,
        "us-east-1",
        service,
        "POST",
        "/",
        None,
        &[
            ("host", host),
            ("x-amz-target", target),
            ("content-type", "application/x-amz-json-1.1"),
        ],
        body,
        std::time::SystemTime::now(),
    )
}

/// Signs a request in the header form: returns the headers to add (`x-amz-date`,
/// `x-amz-content-sha256` and `authorization`). `headers` are the other headers to sign,
/// with lowercase names; they must include `host`. `path` and `query` are as sent on the wire.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    key: &AccessKey,
    region: &str,
    service: &str,
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
    now: SystemTime,
) -> Vec<(String, String)> {
    let amz_date = format_amz_date(unix(now));
    let payload = hex::encode(Sha256::digest(body));
    let mut map = HeaderMap::new();
    let mut names: Vec<String> = Vec::new();
    let all = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .chain([
            ("x-amz-date".to_string(), amz_date.clone()),
            ("x-amz-content-sha256".to_string(), payload.clone()),
        ]);
    for (k, v) in all {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            map.append(n, v);
            if !names.contains(&k) {
                names.push(k);
            }
        }
    }
    names.sort();
    let signed: Vec<&str> = names.iter().map(String::as_str).collect();
    let req = Request {
        method,
        path,
        query,
        headers: &map,
    };
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let canonical = canonical_request(&req, &signed, &payload, false);
    let sts = string_to_sign(&amz_date, &scope, &canonical);
    let k = signing_key(&key.secret_access_key, date, region, service);
    let sig = hex::encode(hmac(&k, sts.as_bytes()).finalize().into_bytes());
    vec![
        ("x-amz-date".into(), amz_date),
        ("x-amz-content-sha256".into(), payload),
        (
            "authorization".into(),
            format!(
                "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={sig}",
                key.access_key_id,
                signed.join(";")
            ),
        ),
    ]
}

/// Presigns a request (query form, signed over the body's SHA-256 and the `host` header):
/// returns the query string to send, `query` (already encoded) plus the `X-Amz-*` parameters.
#[allow(clippy::too_many_arguments)]
pub fn presign(
    key: &AccessKey,
    region: &str,
    service: &str,
    method: &str,
    host: &str,
    path: &str,
    query: Option<&str>,
    body: &[u8],
    expires_secs: i64,
    now: SystemTime,
) -> String {
    let amz_date = format_amz_date(unix(now));
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let mut cred = String::new();
    uri_encode(
        format!("{}/{scope}", key.access_key_id).as_bytes(),
        false,
        &mut cred,
    );
    let mut q = query.map(|q| format!("{q}&")).unwrap_or_default();
    q.push_str(&format!(
        "X-Amz-Algorithm={ALGORITHM}&X-Amz-Credential={cred}&X-Amz-Date={amz_date}&X-Amz-Expires={expires_secs}&X-Amz-SignedHeaders=host"
    ));
    let mut map = HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(host) {
        map.insert(http::header::HOST, v);
    }
    let req = Request {
        method,
        path,
        query: Some(&q),
        headers: &map,
    };
    let payload = hex::encode(Sha256::digest(body));
    let canonical = canonical_request(&req, &["host"], &payload, true);
    let sts = string_to_sign(&amz_date, &scope, &canonical);
    let k = signing_key(&key.secret_access_key, date, region, service);
    let sig = hex::encode(hmac(&k, sts.as_bytes()).finalize().into_bytes());
    format!("{q}&X-Amz-Signature={sig}")
}

#[cfg(test)]
mod tests;
