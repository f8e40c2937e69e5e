//! Authentication to registries other than berth's own, as Docker Hub, public ECR and GHCR
//! ask for it (the distribution token protocol): a request answered 401 with
//! `WWW-Authenticate: Bearer realm="<url>",service="<name>",scope="<scope>"` is retried with
//! `Authorization: Bearer <token>`, the token fetched with `GET <realm>?service=..&scope=..`
//! (anonymously, or with Basic credentials) and cached per (registry, scope) until its
//! `expires_in` (default and minimum 60 s). A `Basic` challenge is answered with the
//! credentials themselves.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::StreamExt;

use super::ClientError;

/// Registry credentials (from a task's `repositoryCredentials`). `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <password>)", self.username)
    }
}

impl Credentials {
    fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// A parsed `WWW-Authenticate` challenge (RFC 9110 §11.6.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

/// Parses the auth-params of one challenge: `k=v` or `k="quoted \" value"`, comma separated.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = s[ks..i].trim().to_ascii_lowercase();
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        i += 1;
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut chars = s[i..].char_indices();
            let mut end = s.len() - i;
            while let Some((j, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => {
                        end = j + 1;
                        break;
                    }
                    c => val.push(c),
                }
            }
            i += end;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = s[vs..i].trim().to_string();
        }
        if !key.is_empty() {
            out.entry(key).or_insert(val);
        }
    }
    out
}

/// The challenge of a 401 answer: the first `Bearer` (with a realm) or `Basic` one among its
/// `WWW-Authenticate` headers, Bearer preferred.
pub fn challenge(headers: &reqwest::header::HeaderMap) -> Option<Challenge> {
    let mut basic = false;
    for v in headers.get_all(reqwest::header::WWW_AUTHENTICATE) {
        let Ok(v) = v.to_str() else { continue };
        let v = v.trim();
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            let mut p = parse_params(rest);
            if let Some(realm) = p.remove("realm").filter(|r| !r.is_empty()) {
                return Some(Challenge::Bearer {
                    realm,
                    service: p.remove("service"),
                    scope: p.remove("scope"),
                });
            }
        } else if scheme.eq_ignore_ascii_case("basic") {
            basic = true;
        }
    }
    basic.then_some(Challenge::Basic)
}

/// Reads at most `limit` bytes of a response body; more is an error.
pub async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if out.len() + chunk.len() > limit {
            return Err(format!("answer larger than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The `code: message` of a registry error body (`{"errors":[{"code":..,"message":..}]}`),
/// printable characters only and at most 200 of them.
pub fn server_message(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let e = &v["errors"][0];
    let s = match (e["code"].as_str(), e["message"].as_str()) {
        (Some(c), Some(m)) => format!("{}: {m}", c.to_ascii_lowercase()),
        (Some(c), None) => c.to_ascii_lowercase(),
        _ => String::from_utf8_lossy(body).into_owned(),
    };
    s.chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect::<String>()
}

/// Bearer tokens (and Basic answers) per (registry, scope), each until it expires.
#[derive(Default)]
pub struct TokenCache {
    map: Mutex<HashMap<(String, String), (String, Instant)>>,
}

/// Entries kept at most; beyond, expired ones are dropped first, then all.
const CACHE_MAX: usize = 1024;

impl TokenCache {
    /// The `Authorization` value cached for `registry` and `scope`, if still valid.
    pub fn get(&self, registry: &str, scope: &str) -> Option<String> {
        let map = self.map.lock().unwrap();
        map.get(&(registry.to_string(), scope.to_string()))
            .filter(|(_, until)| *until > Instant::now())
            .map(|(h, _)| h.clone())
    }

    fn put(&self, registry: &str, scope: &str, header: &str, ttl: Duration) {
        let mut map = self.map.lock().unwrap();
        if map.len() >= CACHE_MAX {
            let now = Instant::now();
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= CACHE_MAX {
                map.clear();
            }
        }
        map.insert(
            (registry.to_string(), scope.to_string()),
            (header.to_string(), Instant::now() + ttl),
        );
    }

    /// Answers `challenge` for a pull from `repository` of `registry` and caches the
    /// result: the `Authorization` header value to retry with. `realm_allowed` says whether
    /// a realm URL may be used (HTTPS, or plain HTTP where the registry policy allows it);
    /// `describe` words a failed token request (the caller knows its TLS policy). Errors are
    /// [`ClientError::Auth`] and read like containerd's (`failed to authorize: failed to fetch
    /// anonymous token: ...`).
    #[allow(clippy::too_many_arguments)]
    pub async fn authorize(
        &self,
        client: &reqwest::Client,
        registry: &str,
        repository: &str,
        challenge: Option<Challenge>,
        credentials: Option<&Credentials>,
        realm_allowed: impl Fn(&reqwest::Url) -> bool,
        describe: impl Fn(&reqwest::Error) -> String,
    ) -> Result<String, ClientError> {
        let default_scope = format!("repository:{repository}:pull");
        let (realm, service, scope) = match challenge {
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => (
                realm,
                service,
                scope.unwrap_or_else(|| default_scope.clone()),
            ),
            Some(Challenge::Basic) => {
                let Some(c) = credentials else {
                    return Err(ClientError::Auth("the registry asks for Basic credentials and the task has no repositoryCredentials".into()));
                };
                let h = c.basic();
                self.put(registry, &default_scope, &h, Duration::from_secs(3600));
                return Ok(h);
            }
            None => {
                return Err(ClientError::Auth(
                    "401 Unauthorized without a Bearer or Basic challenge".into(),
                ))
            }
        };
        if let Some(h) = self.get(registry, &scope) {
            self.put(registry, &default_scope, &h, Duration::from_secs(60));
            return Ok(h);
        }
        let what = if credentials.is_some() {
            "failed to fetch token"
        } else {
            "failed to fetch anonymous token"
        };
        let mut url = reqwest::Url::parse(&realm)
            .map_err(|e| ClientError::Auth(format!("invalid token realm {realm:?}: {e}")))?;
        if !realm_allowed(&url) {
            return Err(ClientError::Auth(format!(
                "token realm {realm} is not HTTPS (plain HTTP is allowed only for loopback hosts and --insecure-registry ones)"
            )));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = &service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", &scope);
            if let Some(c) = credentials {
                q.append_pair("account", &c.username);
            }
        }
        let mut req = client.get(url.clone());
        if let Some(c) = credentials {
            req = req.header(reqwest::header::AUTHORIZATION, c.basic());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ClientError::Auth(format!("{what}: {}", describe(&e))))?;
        let st = resp.status();
        if !st.is_success() {
            return Err(ClientError::Auth(format!(
                "{what}: unexpected status from GET request to {url}: {st}"
            )));
        }
        let body = read_limited(resp, 1 << 20)
            .await
            .map_err(|e| ClientError::Auth(format!("{what}: {e}")))?;
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let t: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| ClientError::Auth(format!("{what}: invalid token answer: {e}")))?;
        let token = t
            .token
            .filter(|t| !t.is_empty())
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ClientError::Auth(format!("{what}: the answer has no token")))?;
        let header = format!("Bearer {token}");
        if reqwest::header::HeaderValue::from_str(&header).is_err() {
            return Err(ClientError::Auth(format!(
                "{what}: the token is not a valid header value"
            )));
        }
        // Kept until shortly before it expires; the spec's minimum lifetime is 60 s.
        let secs = t.expires_in.unwrap_or(60).clamp(60, 86_400);
        let ttl = Duration::from_secs(secs - secs / 10);
        self.put(registry, &scope, &header, ttl);
        // Registries whose challenge names another scope (public ECR says `aws`): the next
        // request of this pull, looked up by its repository scope, carries the token at once.
        if scope != default_scope {
            self.put(registry, &default_scope, &header, ttl);
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};

    fn hm(vals: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in vals {
            h.append(WWW_AUTHENTICATE, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_challenges_as_registries_send_them() {
        let c = challenge(&hm(&[
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/httpd:pull""#,
        ]));
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/httpd:pull".into()),
            })
        );
        // Unquoted values, odd spacing and case, an escaped quote, a scope with a comma.
        let c = challenge(&hm(&[
            r#"bearer  realm=https://r.example/t , Service="a \"b\"", scope="repository:x:pull,push""#,
        ]));
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://r.example/t".into(),
                service: Some("a \"b\"".into()),
                scope: Some("repository:x:pull,push".into()),
            })
        );
        // Bearer wins over Basic; a Bearer without realm does not count.
        let c = challenge(&hm(&[r#"Basic realm="x""#, r#"Bearer realm="https://t""#]));
        assert!(matches!(c, Some(Challenge::Bearer { .. })));
        assert_eq!(
            challenge(&hm(&[r#"Bearer service="x""#, r#"Basic realm="r""#])),
            Some(Challenge::Basic)
        );
        assert_eq!(challenge(&hm(&["Negotiate"])), None);
        assert_eq!(challenge(&hm(&[])), None);
        // Unterminated quotes and garbage do not panic.
        for g in [
            r#"Bearer realm="abc"#,
            "Bearer =,=,,",
            "Bearer realm",
            "Bearer \u{7f}",
        ] {
            if let Ok(v) = HeaderValue::from_str(g) {
                let mut h = HeaderMap::new();
                h.append(WWW_AUTHENTICATE, v);
                let _ = challenge(&h);
            }
        }
    }

    #[test]
    fn cache_per_registry_and_scope_until_expiry() {
        let c = TokenCache::default();
        c.put(
            "r1",
            "repository:a:pull",
            "Bearer x",
            Duration::from_secs(60),
        );
        c.put("r1", "repository:b:pull", "Bearer y", Duration::ZERO);
        assert_eq!(
            c.get("r1", "repository:a:pull").as_deref(),
            Some("Bearer x")
        );
        assert_eq!(c.get("r2", "repository:a:pull"), None);
        assert_eq!(c.get("r1", "repository:b:pull"), None);
        for i in 0..(CACHE_MAX + 5) {
            c.put("r", &i.to_string(), "Bearer z", Duration::from_secs(60));
        }
        assert!(c.map.lock().unwrap().len() <= CACHE_MAX);
    }

    #[test]
    fn server_messages_are_short_and_printable() {
        assert_eq!(
            server_message(
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
            ),
            "unauthorized: authentication required"
        );
        let long = format!("{}\r\nInjected: 1", "a".repeat(300));
        let m = server_message(long.as_bytes());
        assert!(m.len() <= 200 && !m.contains('\n'));
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.basic(), "Basic dTpodW50ZXIy");
    }
}
