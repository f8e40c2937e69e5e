//! Test helpers: a temp directory removed on drop and a registry over an in-memory store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_core::arn::Scope;
use berth_store::SqliteStore;

use crate::Registry;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("berth-registry-{tag}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A registry in a temp dir with `public_host` "127.0.0.1:5150", account 000000000000, that
/// serves `/v2/` without credentials (these tests are about the distribution API; the auth
/// tests turn it back on).
pub fn registry() -> (Arc<Registry>, TempDir) {
    let dir = TempDir::new("reg");
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let scope = Scope {
        region: "us-east-1".into(),
        account: "000000000000".into(),
    };
    let reg = Registry::open(
        &dir.path().join("data"),
        store,
        scope,
        "127.0.0.1:5150".into(),
    )
    .unwrap()
    .with_auth_required(false);
    (Arc::new(reg), dir)
}

/// Runs one ECR operation and unwraps the success body.
pub async fn ecr(reg: &Registry, op: &str, body: serde_json::Value) -> serde_json::Value {
    reg.handle_ecr(op, body.to_string().as_bytes())
        .await
        .unwrap()
}
