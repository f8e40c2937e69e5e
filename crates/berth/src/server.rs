//! `berth server`: wiring only. One HTTP port for the AWS APIs (served by `berth-apiserver`,
//! each service registered in one line), the OCI registry (`/v2/`), the agent protocol
//! (`/_berth/agent/`), the console and `/metrics`; plus the local agent.

use std::sync::Arc;

use anyhow::Context;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use berth_apiserver::auth::{self, Auth, Hosts};
use berth_apiserver::ApiServer;
use berth_registry::Registry;

use crate::ServerArgs;

/// Loads (or on first start creates) the account's access key and says in the log how to use
/// it; `--insecure-any-credentials` swaps in the accept-anything store, loudly. Reads the
/// `/metrics` token from `<data-dir>/metrics-token`.
fn open_auth(args: &ServerArgs, data_dir: &std::path::Path) -> anyhow::Result<Auth> {
    let (credentials, created) =
        berth_iam::Credentials::open_or_create(data_dir, &args.account_id)?;
    let key = credentials
        .primary()
        .cloned()
        .context("credentials.json holds no access key")?;
    tracing::info!(
        access_key_id = %key.access_key_id,
        "{} API credentials: `eval $(berth credentials --data-dir {})` exports them for the AWS CLI",
        if created { "created the account's" } else { "loaded the account's" },
        data_dir.display()
    );
    let credentials = if args.insecure_any_credentials {
        tracing::warn!(
            "--insecure-any-credentials: EVERY request is accepted, signed with any key or not \
             signed at all; anyone who reaches this port controls this server"
        );
        berth_iam::Credentials::insecure_any(&args.account_id).with_primary(key)
    } else {
        credentials
    };
    let token_file = data_dir.join("metrics-token");
    let metrics_token = match std::fs::read_to_string(&token_file) {
        Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", token_file.display())),
    };
    Ok(Auth {
        credentials,
        hosts: Hosts::new(args.listen.port(), &args.hostname),
        metrics_token,
    })
}

/// Runs the server until the process is stopped.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let store = Arc::new(berth_store::SqliteStore::open(&data_dir.join("state.db"))?);
    let scope = berth_core::arn::Scope {
        region: args.region.clone(),
        account: args.account_id.clone(),
    };
    let host = if args.listen.ip().is_unspecified() {
        format!("127.0.0.1:{}", args.listen.port())
    } else {
        args.listen.to_string()
    };
    let registry = Arc::new(
        Registry::open(
            &data_dir.join("registry"),
            store.clone(),
            scope.clone(),
            host.clone(),
        )?
        .with_auth_required(!args.no_registry_auth)
        .with_scan_db(Some(
            args.scan_db
                .clone()
                .unwrap_or_else(|| data_dir.join("scan-db")),
        )),
    );
    // Lifecycle policies and garbage collection every 10 minutes.
    registry.spawn_maintenance(
        std::time::Duration::from_secs(600),
        berth_registry::gc::GcOptions::default(),
    );
    if args.no_registry_auth {
        tracing::warn!(
            "--no-registry-auth: the registry (/v2/) serves and accepts images WITHOUT credentials"
        );
    }
    let auth = Arc::new(open_auth(&args, &data_dir)?);
    let pricing = match &args.pricing {
        Some(p) => berth_control::metering::Pricing::from_json(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("pricing file {}", p.display()))?,
        None => berth_control::metering::Pricing::default(),
    };
    let control = berth_control::control_plane(
        store.clone(),
        store.clone(),
        store,
        scope,
        "local".to_string(),
    );
    // Agents register with the join token (0600 in the data dir, `berth join-token` prints it);
    // the embedded agent gets its own credential here and uses it over HTTP like any other.
    let join_token = berth_control::agent_auth::load_or_create_join_token(&data_dir)?;
    tracing::info!(
        "agents join with the token in {} (`berth join-token --data-dir {}` prints it)",
        berth_control::agent_auth::join_token_path(&data_dir).display(),
        data_dir.display()
    );
    let local_credential = if args.no_agent {
        None
    } else {
        Some(control.issue_agent_credential("local").await?)
    };
    let agent_config = berth_agent::AgentConfig {
        server_url: format!("http://{host}"),
        data_dir: data_dir.join("agent"),
        runtime: args.runtime.clone(),
        instance_id: "local".to_string(),
        network: Some(args.net.config()),
        metrics_interval: args.metrics_interval(),
        credential: local_credential,
        join_token: None,
        credentials: auth.credentials.primary().cloned(),
        pull: args.pull.config(),
    };
    if !args.no_agent {
        // Tasks of a previous run keep running under their shims; the agent re-adopts them.
        berth_agent::preflight(&agent_config)?;
    }
    control.start_controllers();
    // Target tracking over the last six sampling intervals (one minute at the default 10 s).
    let tick = args.metrics_interval();
    berth_control::autoscaling::spawn(control.clone(), tick, tick * 6);
    // Every AWS API: one line each.
    let apis = ApiServer::new()
        .service(berth_control::ecs::EcsApi(control.clone()))
        .service(berth_registry::ecr::EcrApi(registry.clone()))
        .service(berth_control::logs::LogsApi(control.clone()))
        .service(berth_control::autoscaling::AutoScalingApi(control.clone()))
        .service(berth_control::cloudwatch::CloudWatchApi(control.clone()))
        .on_call(berth_control::prom::record_api);
    let app = Router::new()
        .route("/", get(berth_console::index))
        .merge(apis.signed_router(auth.clone()))
        .merge(registry.router().layer(axum::middleware::from_fn(
            berth_control::prom::track_registry,
        )))
        .merge(
            berth_control::prom::router(
                control.clone(),
                Some(data_dir.join("registry").join("blobs")),
            )
            .route_layer(axum::middleware::from_fn_with_state(
                auth.clone(),
                auth::metrics_auth,
            )),
        )
        .merge(
            berth_control::usage_api::router(control.clone(), pricing).route_layer(
                axum::middleware::from_fn_with_state(auth.clone(), auth::sigv4),
            ),
        )
        .merge(berth_console::router())
        .merge(berth_control::agent_api::router(control, join_token));
    let app = berth_apiserver::outer_layers(app, auth.clone());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?
        // Small JSON replies must not wait for delayed ACKs.
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    tracing::info!(listen = %args.listen, data_dir = %data_dir.display(), "berth server ready");
    if !args.no_agent {
        tokio::spawn(async move {
            if let Err(e) = berth_agent::run(agent_config).await {
                tracing::error!(error = %e, "agent stopped");
            }
        });
    }
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .await
    .map_err(|e| anyhow::anyhow!(e))?;
    Ok(())
}
