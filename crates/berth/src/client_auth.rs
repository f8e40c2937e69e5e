//! Credentials of berth's own clients (`berth push/pull/usage`, `berth agent`): the standard
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` variables, else the key in
//! `$BERTH_DATA_DIR/credentials.json` (default `.berth`, the server's default data directory).

use berth_iam::AccessKey;

/// The access key to sign with, if one is configured.
pub fn credentials() -> Option<AccessKey> {
    if let (Ok(id), Ok(secret)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        if !id.is_empty() && !secret.is_empty() {
            return Some(AccessKey {
                access_key_id: id,
                secret_access_key: secret,
                account_id: String::new(),
            });
        }
    }
    let dir = std::env::var_os("BERTH_DATA_DIR").unwrap_or_else(|| ".berth".into());
    berth_iam::Credentials::read_primary(std::path::Path::new(&dir))
        .ok()
        .flatten()
}

/// SigV4 headers (`authorization`, `x-amz-date`, `x-amz-content-sha256`) for a request to
/// `url` with `body`; `extra` are further headers to sign (lowercase names). Empty without
/// credentials.
pub fn sign(
    key: Option<&AccessKey>,
    method: &str,
    url: &reqwest::Url,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Vec<(String, String)> {
    let Some(key) = key else {
        return Vec::new();
    };
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    };
    let mut headers = vec![("host", host.as_str())];
    headers.extend_from_slice(extra);
    berth_iam::sign(
        key,
        "us-east-1",
        "execute-api",
        method,
        url.path(),
        url.query(),
        &headers,
        body,
        std::time::SystemTime::now(),
    )
}
