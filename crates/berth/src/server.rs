//! `berth server`: one HTTP port for the awsJson APIs (`POST /`, dispatched on `X-Amz-Target`),
//! the OCI registry (`/v2/`), and the agent protocol (`/_berth/agent/`); plus the local agent.

use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use berth_api::proto::{self, AwsError};
use berth_control::ControlPlane;
use berth_registry::Registry;

use crate::auth_layer::{self, Auth};
use crate::ServerArgs;

struct Apis {
    control: Arc<ControlPlane>,
    registry: Arc<Registry>,
}

fn aws_response(result: Result<serde_json::Value, AwsError>) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (status, body) = match result {
        Ok(v) => (StatusCode::OK, serde_json::to_vec(&v).unwrap_or_default()),
        Err(e) => (
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            e.body(),
        ),
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static(proto::CONTENT_TYPE),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

/// `POST /`: awsJson1.1 dispatch on the `X-Amz-Target` prefix.
async fn aws_json(State(apis): State<Arc<Apis>>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some((prefix, op)) = proto::split_target(target) else {
        let form = headers.get("content-type").and_then(|v| v.to_str().ok());
        if form.is_some_and(|v| v.starts_with("application/x-www-form-urlencoded")) {
            // The query protocol (`Action=...`): CloudWatch's (signing name `monitoring`), or a
            // service berth does not have yet (EC2, IAM, STS, ELBv2, ...).
            return match crate::unimplemented::signing_service(&headers, None, &body).as_deref() {
                None | Some("monitoring") => {
                    berth_control::cloudwatch::query_response(&apis.control, &body).await
                }
                Some(service) => {
                    let action = form_urlencoded::parse(&body)
                        .find(|(k, _)| k == "Action")
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default();
                    crate::unimplemented::query_response(service, &action)
                }
            };
        }
        return aws_response(Err(AwsError::client(
            "UnknownOperationException",
            "berth expects an X-Amz-Target header (awsJson) or an Action parameter (query protocol).",
        )));
    };
    let started = std::time::Instant::now();
    let result = match prefix {
        proto::ECS_PREFIX => apis.control.handle_ecs(op, &body).await,
        proto::ECR_PREFIX => apis.registry.handle_ecr(op, &body).await,
        proto::LOGS_PREFIX => apis.control.handle_logs(op, &body).await,
        berth_control::autoscaling::TARGET_PREFIX => {
            apis.control.handle_autoscaling(op, &body).await
        }
        berth_control::cloudwatch::TARGET_PREFIX => {
            return berth_control::cloudwatch::json_response(&apis.control, op, &body).await
        }
        _ => {
            let ct = headers.get("content-type").and_then(|v| v.to_str().ok());
            return crate::unimplemented::json_unknown_service(prefix, op, ct);
        }
    };
    if let Err(e) = &result {
        tracing::debug!(target, error = %e, "request failed");
    }
    berth_control::prom::record_api(prefix, op, result.as_ref().err(), started.elapsed());
    aws_response(result)
}

/// Every AWS API route, behind the SigV4 layer: `POST /` (awsJson and query protocols) and
/// CloudWatch's rpcv2Cbor paths. An AWS API added later goes here.
fn aws_routes(apis: Arc<Apis>, control: &Arc<ControlPlane>, auth: &Arc<Auth>) -> Router {
    Router::new()
        .route("/", post(aws_json))
        .with_state(apis)
        .merge(berth_control::cloudwatch::router(control.clone()))
        .route_layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            auth_layer::sigv4,
        ))
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
    let auth = Arc::new(auth_layer::open(&args, &data_dir)?);
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
    let apis = Arc::new(Apis {
        control: control.clone(),
        registry: registry.clone(),
    });
    let app = Router::new()
        .route("/", get(berth_console::index))
        .merge(aws_routes(apis, &control, &auth))
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
                auth_layer::metrics_auth,
            )),
        )
        .merge(
            berth_control::usage_api::router(control.clone(), pricing).route_layer(
                axum::middleware::from_fn_with_state(auth.clone(), auth_layer::sigv4),
            ),
        )
        .merge(berth_console::router())
        .merge(berth_control::agent_api::router(control, join_token))
        .fallback(crate::unimplemented::fallback)
        .layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            auth_layer::host_check,
        ))
        .layer(axum::middleware::from_fn(
            crate::body_drain::close_if_body_unread,
        ));
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
