//! `berth`: the AWS container platform (ECS, ECR, Fargate) as one self-hosted binary.
//! Wiring only (DESIGN §2): subcommands `server` and `agent`.

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
    /// challenge. The agent does not log in yet, so tasks cannot pull from berth in this mode.
    #[arg(long)]
    pub registry_auth: bool,
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
}

fn main() -> anyhow::Result<()> {
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
            Command::Agent(args) => {
                let config = berth_agent::AgentConfig {
                    server_url: args.server,
                    data_dir: args.data_dir,
                    runtime: args.runtime,
                    instance_id: args.instance_id,
                };
                berth_agent::preflight(&config)?;
                berth_agent::run(config).await?;
                Ok(())
            }
        }
    })
}
