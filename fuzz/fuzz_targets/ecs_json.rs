//! awsJson1.1 ECS request bodies through the real handlers (parsing, validation, the store) of a
//! control plane over a throwaway SQLite store: no input may panic the handler.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;

const OPS: [&str; 10] = [
    "RegisterTaskDefinition",
    "RunTask",
    "CreateService",
    "UpdateService",
    "CreateCluster",
    "DescribeTasks",
    "ListTasks",
    "DescribeTaskDefinition",
    "TagResource",
    "StopTask",
];

struct Env {
    rt: tokio::runtime::Runtime,
    cp: Arc<berth_control::ControlPlane>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("berth-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(berth_store::SqliteStore::open(&dir.join("state.db")).unwrap());
        let scope = berth_core::arn::Scope {
            region: "us-east-1".into(),
            account: "000000000000".into(),
        };
        let cp = berth_control::control_plane(store, scope, "local".to_string());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Env { rt, cp }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((sel, body)) = data.split_first() else {
        return;
    };
    let e = env();
    let op = OPS[*sel as usize % OPS.len()];
    let _ = e.rt.block_on(e.cp.handle_ecs(op, body));
});
