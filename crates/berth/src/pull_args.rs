//! Registry access flags shared by `berth server` and `berth agent`.

use std::path::PathBuf;

use clap::Args;

/// How the agent reaches registries other than berth's own.
#[derive(Args, Clone, Default)]
pub struct PullArgs {
    /// PEM file of CA certificates to trust for registries, in addition to the system's CA
    /// store (repeatable). Every registry but berth's own and loopback ones is pulled from
    /// over HTTPS only.
    #[arg(long = "registry-ca", value_name = "FILE")]
    pub registry_ca: Vec<PathBuf>,
    /// Registry that may be pulled from over plain HTTP, `HOST` (any port) or `HOST:PORT`
    /// (repeatable; like podman's `insecure = true`). HTTPS is tried first; a certificate
    /// error is never downgraded. Loopback registries are allowed without it.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,
}

impl PullArgs {
    pub fn config(&self) -> berth_agent::PullConfig {
        berth_agent::PullConfig {
            registry_ca: self.registry_ca.clone(),
            insecure_registries: self.insecure_registry.clone(),
        }
    }
}
