//! Registry credentials (ECR GetAuthorizationToken, DESIGN §4).
//!
//! A token is `<expiresAt>.<hex HMAC-SHA256(secret, "berth-ecr-token:" + expiresAt)>`, verifiable
//! without state; the 32-byte secret is created once at `<data_dir>/auth.key` (mode 0600). Clients
//! log in as `AWS` with the token as password (`Authorization: Basic base64("AWS:<token>")`).
//! Tokens live 12 hours, as ECR's do.

use std::path::Path;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::RegistryError;

/// Token lifetime in seconds (12 h).
pub const TOKEN_TTL_SECS: u64 = 12 * 3600;

/// Mints and verifies tokens with one secret.
pub struct TokenAuthority {
    secret: Vec<u8>,
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new_with_prefix(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new_with_prefix(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

impl TokenAuthority {
    /// Loads `<data_dir>/auth.key`, creating it with fresh random bytes if missing.
    pub fn open(data_dir: &Path) -> Result<Self, RegistryError> {
        let path = data_dir.join("auth.key");
        match std::fs::read(&path) {
            Ok(secret) if secret.len() >= 32 => return Ok(Self { secret }),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let mut secret = Vec::with_capacity(32);
        secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        let tmp = data_dir.join("auth.key.tmp");
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            f.write_all(&secret)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        Ok(Self { secret })
    }

    fn mac(&self, expires_at: u64) -> String {
        hex::encode(hmac_sha256(
            &self.secret,
            format!("berth-ecr-token:{expires_at}").as_bytes(),
        ))
    }

    /// A token valid until `now + 12 h`; returns `(token, expires_at)`.
    pub fn mint(&self, now: u64) -> (String, u64) {
        let expires_at = now + TOKEN_TTL_SECS;
        (format!("{expires_at}.{}", self.mac(expires_at)), expires_at)
    }

    /// Whether `token` was minted with this secret and has not expired at `now`.
    pub fn verify(&self, token: &str, now: u64) -> bool {
        let Some((exp, mac)) = token.split_once('.') else {
            return false;
        };
        let Ok(exp) = exp.parse::<u64>() else {
            return false;
        };
        let expected = self.mac(exp);
        let same = expected.len() == mac.len()
            && expected
                .bytes()
                .zip(mac.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        same && now < exp
    }

    /// Checks an `Authorization` header value: `Basic base64("AWS:<token>")` with a valid token.
    pub fn verify_header(&self, value: &str, now: u64) -> bool {
        let Some(b64) = value
            .strip_prefix("Basic ")
            .or_else(|| value.strip_prefix("basic "))
        else {
            return false;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return false;
        };
        let Ok(raw) = String::from_utf8(raw) else {
            return false;
        };
        match raw.split_once(':') {
            Some(("AWS", token)) => self.verify(token, now),
            _ => false,
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_rfc4231_case_2() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn tokens() {
        let dir = std::env::temp_dir().join(format!("berth-auth-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = TokenAuthority::open(&dir).unwrap();
        let (t, exp) = a.mint(1000);
        assert_eq!(exp, 1000 + TOKEN_TTL_SECS);
        assert!(a.verify(&t, 1001));
        assert!(!a.verify(&t, exp));
        assert!(!a.verify(&t.replace('.', ".0"), 1001));
        // The secret persists: a reopened authority accepts the same token.
        assert!(TokenAuthority::open(&dir).unwrap().verify(&t, 1001));
        let h = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("AWS:{t}"))
        );
        assert!(a.verify_header(&h, 1001));
        let wrong_user = base64::engine::general_purpose::STANDARD.encode(format!("bob:{t}"));
        assert!(!a.verify_header(&format!("Basic {wrong_user}"), 1001));
        assert!(!a.verify_header("Bearer x", 1001));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
