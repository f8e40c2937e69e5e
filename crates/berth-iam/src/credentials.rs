//! The account's access keys, kept in `<data-dir>/credentials.json` (mode 0600):
//! `{"AccessKeys": [{"AccessKeyId": "AKIA...", "SecretAccessKey": "...", "AccountId": "..."}]}`.
//!
//! A new data directory gets one key pair: an AKIA-style id (`AKIA` + 16 characters of
//! `A-Z2-7`, 80 random bits) and a 40-character secret (`A-Za-z0-9+/`, 240 random bits), both
//! from `/dev/urandom`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the key store inside the data directory.
pub const FILE_NAME: &str = "credentials.json";

/// One access key pair of the account.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    /// `AKIA` + 16 characters.
    #[serde(rename = "AccessKeyId")]
    pub access_key_id: String,
    /// 40 characters; never logged.
    #[serde(rename = "SecretAccessKey")]
    pub secret_access_key: String,
    /// The 12-digit account the key belongs to.
    #[serde(rename = "AccountId", default)]
    pub account_id: String,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct StoreFile {
    #[serde(rename = "AccessKeys")]
    access_keys: Vec<AccessKey>,
}

/// Who made an authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The account the key belongs to.
    pub account_id: String,
    /// The access key that signed (as sent, under `--insecure-any-credentials`).
    pub access_key_id: String,
}

/// Errors of the key store.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not the store's JSON.
    #[error("{path}: {source}")]
    Format {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The account's access keys, or the insecure mode that accepts any key without checking.
pub struct Credentials {
    pub(crate) keys: HashMap<String, AccessKey>,
    pub(crate) primary: Option<AccessKey>,
    pub(crate) any: bool,
    pub(crate) account_id: String,
}

fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

impl AccessKey {
    /// A fresh random key pair for `account_id`.
    pub fn generate(account_id: &str) -> std::io::Result<AccessKey> {
        const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let r = random_bytes(56)?;
        let id: String = r[..16]
            .iter()
            .map(|b| B32[(b & 31) as usize] as char)
            .collect();
        let secret: String = r[16..]
            .iter()
            .map(|b| B64[(b & 63) as usize] as char)
            .collect();
        Ok(AccessKey {
            access_key_id: format!("AKIA{id}"),
            secret_access_key: secret,
            account_id: account_id.to_string(),
        })
    }
}

/// Writes `bytes` to `path` with mode 0600 (through a temporary file and a rename).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl Credentials {
    /// Loads `<data_dir>/credentials.json`, creating it with one fresh key pair for
    /// `account_id` when it does not exist. Returns the store and whether it was created.
    pub fn open_or_create(
        data_dir: &Path,
        account_id: &str,
    ) -> Result<(Credentials, bool), CredentialsError> {
        let path = data_dir.join(FILE_NAME);
        let io = |source| CredentialsError::Io {
            path: path.clone(),
            source,
        };
        let (file, created) = match std::fs::read(&path) {
            Ok(b) => (
                serde_json::from_slice::<StoreFile>(&b).map_err(|source| {
                    CredentialsError::Format {
                        path: path.clone(),
                        source,
                    }
                })?,
                false,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let file = StoreFile {
                    access_keys: vec![AccessKey::generate(account_id).map_err(io)?],
                };
                let json = serde_json::to_vec_pretty(&file).unwrap_or_default();
                write_private(&path, &json).map_err(io)?;
                (file, true)
            }
            Err(e) => return Err(io(e)),
        };
        let mut keys = HashMap::new();
        for mut k in file.access_keys.iter().cloned() {
            if k.account_id.is_empty() {
                k.account_id = account_id.to_string();
            }
            keys.insert(k.access_key_id.clone(), k);
        }
        let primary = file
            .access_keys
            .first()
            .map(|k| keys[&k.access_key_id].clone());
        Ok((
            Credentials {
                keys,
                primary,
                any: false,
                account_id: account_id.to_string(),
            },
            created,
        ))
    }

    /// The first key of `<data_dir>/credentials.json` without creating anything; `None` when
    /// the file does not exist.
    pub fn read_primary(data_dir: &Path) -> Result<Option<AccessKey>, CredentialsError> {
        let path = data_dir.join(FILE_NAME);
        match std::fs::read(&path) {
            Ok(b) => {
                let f: StoreFile =
                    serde_json::from_slice(&b).map_err(|source| CredentialsError::Format {
                        path: path.clone(),
                        source,
                    })?;
                Ok(f.access_keys.into_iter().next())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CredentialsError::Io { path, source }),
        }
    }

    /// A store that accepts every request, signed with any key or not at all
    /// (`berth server --insecure-any-credentials`, for emulator-style CI).
    pub fn insecure_any(account_id: &str) -> Credentials {
        Credentials {
            keys: HashMap::new(),
            primary: None,
            any: true,
            account_id: account_id.to_string(),
        }
    }

    /// Adds `key` to the store (it need not be in the file; e.g. the primary key of another
    /// store in insecure mode).
    pub fn with_primary(mut self, key: AccessKey) -> Credentials {
        self.keys.insert(key.access_key_id.clone(), key.clone());
        self.primary = Some(key);
        self
    }

    /// Whether every request is accepted without checking.
    pub fn accepts_any(&self) -> bool {
        self.any
    }

    /// The key with this id.
    pub fn lookup(&self, access_key_id: &str) -> Option<&AccessKey> {
        self.keys.get(access_key_id)
    }

    /// The account's first key (what `berth credentials` prints and the local agent signs with).
    pub fn primary(&self) -> Option<&AccessKey> {
        self.primary.as_ref()
    }

    /// The account these keys belong to.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_private_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("berth-iam-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.join(FILE_NAME));
        let (a, created) = Credentials::open_or_create(&dir, "000000000000").unwrap();
        assert!(created);
        let k = a.primary().unwrap().clone();
        assert!(k.access_key_id.starts_with("AKIA") && k.access_key_id.len() == 20);
        assert_eq!(k.secret_access_key.len(), 40);
        let mode = std::fs::metadata(dir.join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (b, created) = Credentials::open_or_create(&dir, "000000000000").unwrap();
        assert!(!created);
        assert_eq!(b.primary(), Some(&k));
        assert_eq!(b.lookup(&k.access_key_id), Some(&k));
        assert!(!format!("{k:?}").contains(&k.secret_access_key));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
