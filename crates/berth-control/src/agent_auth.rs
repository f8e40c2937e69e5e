//! Who may speak the agent protocol (`berth_api::agent`): the join token an agent registers
//! with, and the per-agent credentials the control plane hands out for it.
//!
//! - The join token is 32 random bytes (64 hex digits) in `<data-dir>/agent-join-token`, mode
//!   0600, created at the server's first start ([`load_or_create_join_token`]).
//! - A credential is `<id>.<secret>`: `id` 16 hex digits naming the store record
//!   (`agent.credential/<id>`: the instance id and the secret's SHA-256, never the secret),
//!   `secret` 64 hex digits. `agent.instance/<instance>` points at the instance's credential, so
//!   an instance is registered once ([`ControlPlane::register_agent`]).
//! - Secrets are compared by their SHA-256 in constant time.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_store::{Expect, Op, StoreError, StoreExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ControlPlane;

/// The join token's file name in the server's data directory.
pub const JOIN_TOKEN_FILE: &str = "agent-join-token";

const CREDENTIAL: &str = "agent.credential";
const INSTANCE: &str = "agent.instance";

/// Failures of agent registration and authentication.
#[derive(Debug, thiserror::Error)]
pub enum AgentAuthError {
    /// The join token or credential is missing or wrong.
    #[error("missing or wrong agent credential")]
    Unauthorized,
    /// The instance id is not 1-64 of `[A-Za-z0-9._-]`.
    #[error("invalid instance id {0:?}: use 1-64 letters, digits, '.', '_' and '-'")]
    InvalidArgument(String),
    /// The instance already has a credential.
    #[error("container instance {0:?} is already registered; register under another instance id")]
    Conflict(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("random source: {0}")]
    Random(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// `agent.credential/<id>`.
#[derive(Debug, Serialize, Deserialize)]
struct CredentialRecord {
    instance_id: String,
    /// Hex SHA-256 of the secret.
    secret_sha256: String,
    /// Epoch seconds.
    created_at: f64,
    /// `join` (registered with the join token) or `server` (the embedded agent's).
    source: String,
}

fn random_hex(bytes: usize) -> Result<String, AgentAuthError> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| AgentAuthError::Random(e.to_string()))?;
    Ok(hex::encode(b))
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// True when `a` and `b` are the same text, compared by SHA-256 in constant time.
pub fn same_secret(a: &str, b: &str) -> bool {
    sha256(a).ct_eq(&sha256(b)).into()
}

/// The join token file of the data directory `data_dir`.
pub fn join_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(JOIN_TOKEN_FILE)
}

/// Reads the join token of `data_dir`, creating it (mode 0600, written to a temporary file,
/// synced and renamed) when there is none. A token file readable by others is made 0600.
pub fn load_or_create_join_token(data_dir: &Path) -> Result<String, AgentAuthError> {
    let path = join_token_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => {
            let mode = std::fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "{} was readable by others (mode {:o}); setting it to 0600",
                    path.display(),
                    mode & 0o777
                );
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            return Ok(t.trim().to_string());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let token = random_hex(32)?;
    let tmp = data_dir.join(format!(".{JOIN_TOKEN_FILE}.{}", std::process::id()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(format!("{token}\n").as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(token)
}

impl ControlPlane {
    fn new_credential(
        &self,
        instance_id: &str,
        source: &str,
    ) -> Result<(String, String, Vec<u8>), AgentAuthError> {
        let id = random_hex(8)?;
        let secret = random_hex(32)?;
        let rec = CredentialRecord {
            instance_id: instance_id.to_string(),
            secret_sha256: hex::encode(sha256(&secret)),
            created_at: berth_core::epoch_now(),
            source: source.to_string(),
        };
        Ok((
            id.clone(),
            format!("{id}.{secret}"),
            serde_json::to_vec(&rec).map_err(StoreError::from)?,
        ))
    }

    /// Registers container instance `instance_id` (the caller has shown the join token) and
    /// returns its credential. An instance registers once: a second registration is a
    /// [`AgentAuthError::Conflict`], so a join-token holder cannot take over another agent's
    /// tasks.
    pub async fn register_agent(&self, instance_id: &str) -> Result<String, AgentAuthError> {
        if !berth_api::agent::valid_instance_id(instance_id) {
            return Err(AgentAuthError::InvalidArgument(instance_id.to_string()));
        }
        let (id, credential, rec) = self.new_credential(instance_id, "join")?;
        let ops = vec![
            Op::put(INSTANCE, instance_id, &id, Expect::Absent)?,
            Op::Put {
                kind: CREDENTIAL.into(),
                key: id,
                value: rec,
                expect: Expect::Absent,
            },
        ];
        match self.store.commit(ops).await {
            Ok(_) => {
                tracing::info!(instance = %instance_id, "agent registered");
                Ok(credential)
            }
            Err(StoreError::Conflict { .. }) => {
                Err(AgentAuthError::Conflict(instance_id.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Issues a fresh credential for `instance_id` in-process (the server's embedded agent),
    /// replacing the instance's earlier one.
    pub async fn issue_agent_credential(
        &self,
        instance_id: &str,
    ) -> Result<String, AgentAuthError> {
        if !berth_api::agent::valid_instance_id(instance_id) {
            return Err(AgentAuthError::InvalidArgument(instance_id.to_string()));
        }
        let (id, credential, rec) = self.new_credential(instance_id, "server")?;
        let mut ops = Vec::new();
        if let Some((old, _)) = self.store.get_json::<String>(INSTANCE, instance_id).await? {
            ops.push(Op::delete(CREDENTIAL, &old, Expect::Any));
        }
        ops.push(Op::put(INSTANCE, instance_id, &id, Expect::Any)?);
        ops.push(Op::Put {
            kind: CREDENTIAL.into(),
            key: id,
            value: rec,
            expect: Expect::Absent,
        });
        self.store.commit(ops).await?;
        Ok(credential)
    }

    /// The instance id a credential (`<id>.<secret>`) was issued for.
    pub async fn authenticate_agent(&self, credential: &str) -> Result<String, AgentAuthError> {
        let (id, secret) = credential
            .split_once('.')
            .ok_or(AgentAuthError::Unauthorized)?;
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AgentAuthError::Unauthorized);
        }
        let Some((rec, _)) = self
            .store
            .get_json::<CredentialRecord>(CREDENTIAL, id)
            .await?
        else {
            return Err(AgentAuthError::Unauthorized);
        };
        let want = hex::decode(&rec.secret_sha256).unwrap_or_default();
        if !bool::from(sha256(secret).as_slice().ct_eq(&want)) {
            return Err(AgentAuthError::Unauthorized);
        }
        // The instance's current credential only (a replaced one no longer works).
        match self
            .store
            .get_json::<String>(INSTANCE, &rec.instance_id)
            .await?
        {
            Some((current, _)) if current == id => Ok(rec.instance_id),
            _ => Err(AgentAuthError::Unauthorized),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn cp() -> Arc<ControlPlane> {
        let store = Arc::new(berth_store::SqliteStore::open_in_memory().unwrap());
        crate::control_plane(
            store.clone(),
            store.clone(),
            store,
            berth_core::arn::Scope {
                region: "us-east-1".into(),
                account: "000000000000".into(),
            },
            "local".into(),
        )
    }

    #[tokio::test]
    async fn register_authenticate_conflict() {
        let cp = cp();
        let c = cp.register_agent("b-1").await.unwrap();
        assert_eq!(cp.authenticate_agent(&c).await.unwrap(), "b-1");
        assert!(matches!(
            cp.register_agent("b-1").await,
            Err(AgentAuthError::Conflict(_))
        ));
        assert!(matches!(
            cp.register_agent("../x").await,
            Err(AgentAuthError::InvalidArgument(_))
        ));
        let (id, secret) = c.split_once('.').unwrap();
        let mut wrong = secret.to_string().into_bytes();
        wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
        let wrong = format!("{id}.{}", String::from_utf8(wrong).unwrap());
        assert!(cp.authenticate_agent(&wrong).await.is_err());
        assert!(cp.authenticate_agent(secret).await.is_err());
        assert!(cp.authenticate_agent("").await.is_err());
        // The embedded agent's credential replaces the instance's earlier one.
        let l1 = cp.issue_agent_credential("local").await.unwrap();
        let l2 = cp.issue_agent_credential("local").await.unwrap();
        assert!(cp.authenticate_agent(&l1).await.is_err());
        assert_eq!(cp.authenticate_agent(&l2).await.unwrap(), "local");
    }

    #[test]
    fn join_token_file() {
        let d = std::env::temp_dir().join(format!("berth-jt-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let t = load_or_create_join_token(&d).unwrap();
        assert_eq!(t.len(), 64);
        let p = join_token_path(&d);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_or_create_join_token(&d).unwrap(), t);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(same_secret(&t, &t));
        assert!(!same_secret(&t, "x"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
