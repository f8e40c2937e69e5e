//! `berth`: the AWS container platform (ECS, ECR, Fargate) as one self-hosted binary.
//! Wiring only (DESIGN §2): subcommands `server`, `agent` and the user verbs. The per-task shim
//! is a separate few-KiB executable embedded in this binary (`berth_agent::shim::BINARY`),
//! which the agent installs under its data directory; it is not a subcommand, so that each
//! running task costs a few dozen KiB instead of a mapping of this whole binary.

mod client_auth;
mod credentials_verb;
mod image_verbs;
mod pull_args;
mod scan_db_verb;
mod server;
mod usage_verb;

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
    /// Run only a node agent that takes tasks from a berth server (it registers with the
    /// server's join token once, then uses the credential it got).
    Agent(AgentArgs),
    /// Print the join token agents register with (`berth agent --join-token`); creates it
    /// (mode 0600) when the server has not yet.
    JoinToken {
        /// The server's data directory.
        #[arg(long, default_value = ".berth")]
        data_dir: PathBuf,
    },
    /// Print metered usage (vCPU-seconds, GB-seconds, cost) of a berth server's tasks:
    /// per second from image pull start to stop, one-minute minimum, Fargate rates.
    Usage(usage_verb::UsageArgs),
    /// Manage the image scanner's vulnerability database (offline OSV imports).
    ScanDb(scan_db_verb::ScanDbArgs),
    /// Push an image from an OCI layout to a registry (berth's own by default), with progress:
    /// `berth push oci:./web:1 web:1`.
    Push {
        /// `oci:DIR[:TAG]`; TAG picks the image in the layout's index.json.
        src: String,
        /// Image reference: `repo:tag`, `127.0.0.1:5150/repo:tag` or the ECR hostname form.
        dest: String,
        /// berth's endpoint (its registry, and where to get a password when one is asked for).
        #[arg(long, default_value = "http://127.0.0.1:5150")]
        endpoint: String,
    },
    /// Print the account's access key (created on a server's first start):
    /// `eval $(berth credentials)` exports it for the AWS CLI and SDKs.
    Credentials(credentials_verb::CredentialsArgs),
    /// Pull an image from a registry (berth's own by default) into an OCI layout, with progress:
    /// `berth pull web:1 oci:./web`.
    Pull {
        /// Image reference: `repo:tag`, `repo@sha256:...`, `host:port/repo:tag`.
        src: String,
        /// `oci:DIR[:TAG]` (TAG defaults to the source tag).
        dest: String,
        /// berth's endpoint (its registry, and where to get a password when one is asked for).
        #[arg(long, default_value = "http://127.0.0.1:5150")]
        endpoint: String,
    },
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
    /// Serve the registry (/v2/) without credentials. By default, as ECR, every request needs
    /// `Authorization: Basic` with the password of `aws ecr get-login-password` (user AWS) and
    /// gets 401 with a Basic challenge without it; the local agent gets its password the same way.
    #[arg(long)]
    pub no_registry_auth: bool,
    /// A name clients reach this server by (repeatable; `name` for any port, `name:port`).
    /// Requests whose `Host` is not one of these, `localhost` or an IP address with the listen
    /// port get 421 (DNS-rebinding protection).
    #[arg(long = "hostname", value_name = "NAME")]
    pub hostname: Vec<String>,
    /// Accept every API request whatever its credentials, signed or not (emulator-style CI
    /// only; logged loudly at start). By default requests must be signed (SigV4) with the
    /// account's access key (`berth credentials`).
    #[arg(long)]
    pub insecure_any_credentials: bool,
    /// Directory of OSV vulnerability records (JSON files, searched recursively) that image
    /// scans (StartImageScan, scanOnPush) match the images' dpkg/apk packages against; default
    /// `<data-dir>/scan-db` (filled by `berth scan-db import`). Without records scans end FAILED
    /// saying no database is configured.
    #[arg(long)]
    pub scan_db: Option<PathBuf>,
    /// Price table for metering (`berth usage`, `/_berth/usage`): JSON
    /// `{"currency":"USD","rates":{"FARGATE":{"vcpu_per_hour":0.04048,"gb_per_hour":0.004445},
    /// "FARGATE_SPOT":{...}}}`; keys it leaves out keep the defaults (Fargate us-east-1
    /// Linux/x86 on-demand rates and a Spot snapshot).
    #[arg(long)]
    pub pricing: Option<PathBuf>,
    /// Seconds between samples of running tasks' CPU and memory (CloudWatch `AWS/ECS` metrics);
    /// auto scaling evaluates once per interval over the last six samples.
    #[arg(long, default_value_t = 10.0)]
    pub metrics_interval: f64,
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub pull: pull_args::PullArgs,
}

impl ServerArgs {
    /// `--metrics-interval` as a duration (at least 100 ms).
    pub fn metrics_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.metrics_interval.max(0.1))
    }
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
    /// The server's join token (`berth join-token` on the server prints it). Prefer the
    /// BERTH_JOIN_TOKEN environment variable: a command line is readable by every user. Needed
    /// for the first start only: the credential the agent gets is kept in
    /// <data-dir>/credential (mode 0600).
    #[arg(long)]
    pub join_token: Option<String>,
    /// Seconds between samples of running tasks' CPU and memory (CloudWatch metrics).
    #[arg(long, default_value_t = 10.0)]
    pub metrics_interval: f64,
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub pull: pull_args::PullArgs,
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
            Command::Usage(args) => usage_verb::run(args).await,
            Command::ScanDb(args) => scan_db_verb::run(args),
            Command::Credentials(args) => credentials_verb::run(args),
            Command::Push {
                src,
                dest,
                endpoint,
            } => image_verbs::push(&src, &dest, &endpoint).await,
            Command::Pull {
                src,
                dest,
                endpoint,
            } => image_verbs::pull(&src, &dest, &endpoint).await,
            Command::JoinToken { data_dir } => {
                std::fs::create_dir_all(&data_dir)?;
                let t = berth_control::agent_auth::load_or_create_join_token(&data_dir)?;
                println!("{t}");
                Ok(())
            }
            Command::Agent(args) => {
                let join_token = args
                    .join_token
                    .or_else(|| std::env::var("BERTH_JOIN_TOKEN").ok())
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty());
                let config = berth_agent::AgentConfig {
                    server_url: args.server,
                    data_dir: args.data_dir,
                    runtime: args.runtime,
                    instance_id: args.instance_id,
                    network: Some(args.net.config()),
                    metrics_interval: std::time::Duration::from_secs_f64(
                        args.metrics_interval.max(0.1),
                    ),
                    credential: None,
                    join_token,
                    credentials: client_auth::credentials(),
                    pull: args.pull.config(),
                };
                berth_agent::preflight(&config)?;
                berth_agent::run(config).await?;
                Ok(())
            }
        }
    })
}
