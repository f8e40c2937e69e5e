//! `berth`: the AWS container platform (ECS, ECR, Fargate) as one self-hosted binary.
//! Wiring only (DESIGN §2): subcommands `server`, `agent` and `shim` (the per-task shim the
//! agent starts; it is dispatched before anything else is set up, to stay small).

mod server;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "The AWS container platform (ECS, ECR, Fargate) on your own machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane, the registry and (unless --no-agent) the local agent on one port.
    Server(ServerArgs),
    /// Run only a node agent that takes tasks from a berth server.
    Agent(AgentArgs),
    /// The per-task shim (started by the agent; not for direct use):
    /// `berth shim <task-dir> <runtime>`.
    Shim { task_dir: PathBuf, runtime: String },
}

/// Task networking options shared by `berth server` and `berth agent`.
#[derive(Args, Clone)]
pub struct NetArgs {
    /// Subnet (IPv4 CIDR) awsvpc tasks get their addresses from; the bridge takes the first
    /// address, which also serves the task metadata endpoint.
    #[arg(long, default_value = "10.213.0.0/16")]
    pub task_subnet: String,
    /// Name of the bridge awsvpc tasks are attached to (created on first use).
    #[arg(long, default_value = "berth0")]
    pub task_bridge: String,
    /// Port of the task metadata endpoint (ECS_CONTAINER_METADATA_URI_V4) on the bridge address.
    #[arg(long, default_value_t = 80)]
    pub metadata_port: u16,
    /// Directory of the CNI plugins (bridge, host-local).
    #[arg(long, default_value = "/usr/lib/cni")]
    pub cni_path: PathBuf,
}

impl NetArgs {
    pub fn config(&self) -> berth_agent::NetworkConfig {
        berth_agent::NetworkConfig {
            subnet: self.task_subnet.clone(),
            bridge: self.task_bridge.clone(),
            cni_path: self.cni_path.clone(),
            metadata_port: self.metadata_port,
        }
    }
}

/// Options of `berth server`.
#[derive(Args)]
pub struct ServerArgs {
    /// Address to serve the ECS, ECR and CloudWatch Logs APIs, the OCI registry (/v2/) and the
    /// agent protocol on.
    #[arg(long, default_value = "127.0.0.1:5150")]
    pub listen: SocketAddr,
    /// Directory for all state: the SQLite store, registry blobs, snapshots and task bundles.
    #[arg(long, default_value = ".berth")]
    pub data_dir: PathBuf,
    /// The 12-digit AWS account id used in ARNs and ECR registry ids.
    #[arg(long, default_value = "000000000000")]
    pub account_id: String,
    /// The AWS region used in ARNs.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// OCI runtime binary the local agent runs containers with (crun or runc; name or path).
    #[arg(long, default_value = "crun")]
    pub runtime: String,
    /// Do not run a local agent (tasks wait for `berth agent` processes).
    #[arg(long)]
    pub no_agent: bool,
    /// Require credentials on the registry (/v2/): without `Authorization: Basic` carrying the
    /// password of `aws ecr get-login-password` (user AWS) requests get 401 with a Basic
    /// challenge. The local agent fetches a token the same way to pull task images.
    #[arg(long)]
    pub registry_auth: bool,
    /// Directory of OSV vulnerability records (JSON files, searched recursively) that image
    /// scans (StartImageScan, scanOnPush) match the images' dpkg/apk packages against; without
    /// it scans end FAILED saying no database is configured.
    #[arg(long)]
    pub scan_db: Option<PathBuf>,
    #[command(flatten)]
    pub net: NetArgs,
}

/// Options of `berth agent`.
#[derive(Args)]
pub struct AgentArgs {
    /// URL of the berth server to take tasks from.
    #[arg(long, default_value = "http://127.0.0.1:5150")]
    pub server: String,
    /// Directory for the agent's image cache, snapshots and task bundles.
    #[arg(long, default_value = ".berth/agent")]
    pub data_dir: PathBuf,
    /// OCI runtime binary (crun or runc; name or path).
    #[arg(long, default_value = "crun")]
    pub runtime: String,
    /// Container instance id this agent registers as.
    #[arg(long, default_value = "local")]
    pub instance_id: String,
    #[command(flatten)]
    pub net: NetArgs,
}

fn main() -> anyhow::Result<()> {
    // The shim runs for every task: no argument parser, logger or async runtime.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("shim") && args.len() == 4 {
        std::process::exit(berth_agent::shim::main(&args[2..]));
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Server(args) => server::run(args).await,
            Command::Shim { task_dir, runtime } => {
                let args = [task_dir.display().to_string(), runtime];
                std::process::exit(berth_agent::shim::main(&args));
            }
            Command::Agent(args) => {
                let config = berth_agent::AgentConfig {
                    server_url: args.server,
                    data_dir: args.data_dir,
                    runtime: args.runtime,
                    instance_id: args.instance_id,
                    shim_bin: None,
                    network: Some(args.net.config()),
                };
                berth_agent::preflight(&config)?;
                berth_agent::run(config).await?;
                Ok(())
            }
        }
    })
}
