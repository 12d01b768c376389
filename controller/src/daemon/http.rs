//! The daemon's side of the API: routes, request bodies, and one error shape for every
//! failure (`{"error": "..."}` with a status that says what kind).

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, Query, Request, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, de::DeserializeOwned};
use xnic_proto::{
    api::{
        ApiError, ApplyRequest, ChangeView, FlowRequest, FlowRequestView, RouteAddRequest,
        RssEngineAddRequest, RssEngineRemoved, RssEngineSetRequest, RssSetRequest, RuleAddRequest,
        TraceRequest, VmChanged, VmPatch,
    },
    config::{EngineConfig, VmConfig, VnicConfig},
};

use super::{Daemon, NO_RSS};
use crate::model::{
    Change, Refusal,
    vnic::{RuleDirection, VnicChange},
};

type Shared = State<Arc<Daemon>>;

/// Longest request path with its query: names are short, so anything longer is a mistake.
const MAX_URI_LEN: usize = 8 * 1024;

/// Largest request body: a configuration of thousands of VMs is a few MiB.
const MAX_BODY_LEN: usize = 16 * 1024 * 1024;

/// Longest a `GET /v1/events?wait=` may hold the request open.
const MAX_EVENT_WAIT: Duration = Duration::from_secs(60);

struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        let status = match &r {
            Refusal::NotFound(_) => StatusCode::NOT_FOUND,
            Refusal::Invalid(_) => StatusCode::BAD_REQUEST,
            Refusal::Conflict(m) if m.starts_with("the desired state changed meanwhile") => {
                StatusCode::PRECONDITION_FAILED
            }
            Refusal::Conflict(_) => StatusCode::CONFLICT,
            Refusal::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(status, r.message().to_string())
    }
}

impl From<QueryRejection> for Failure {
    fn from(e: QueryRejection) -> Self {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("bad query string: {}", e.body_text()),
        )
    }
}

const ENDPOINTS: &str = "GET /v1/status, GET|POST /v1/vms, GET|PATCH|DELETE /v1/vms/NAME, \
     GET /v1/stats, GET /v1/events, GET /v1/config, POST /v1/apply, POST /v1/down, GET /v1/rss, \
     GET /v1/rss/events, POST /v1/rss/vms/NAME, POST /v1/rss/engines, \
     POST|PATCH|DELETE /v1/rss/engines/NAME, GET /v1/rss/engines/NAME/buckets, GET /v1/team, \
     GET /v1/team/events, GET /v1/flows, GET /v1/flows/stats, POST /v1/flows/offload, \
     POST /v1/flows/demote, POST /v1/trace, GET|POST /v1/vnics, GET /v1/vnics/stats, GET|DELETE /v1/vnics/NAME, \
     GET|POST|DELETE /v1/routes, GET /v1/routes/lookup, GET|POST|DELETE /v1/rules and \
     GET /metrics";

pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/vms", get(vms).post(vm_add))
        .route("/v1/vms/{name}", get(vm).patch(vm_set).delete(vm_del))
        .route("/v1/stats", get(stats))
        .route("/v1/events", get(events))
        .route("/v1/config", get(desired))
        .route("/v1/apply", post(apply))
        .route("/v1/down", post(down))
        .route("/v1/rss", get(rss_status))
        .route("/v1/rss/events", get(rss_events))
        .route("/v1/rss/engines", post(rss_engine_add))
        .route(
            "/v1/rss/engines/{name}",
            post(rss_engine_set)
                .patch(rss_engine_set)
                .delete(rss_engine_remove),
        )
        .route("/v1/rss/engines/{name}/buckets", get(rss_buckets))
        .route("/v1/rss/vms/{name}", post(rss_set))
        .route("/v1/team", get(team_status))
        .route("/v1/team/events", get(team_events))
        .route("/v1/flows", get(flows))
        .route("/v1/flows/stats", get(flow_stats))
        .route("/v1/flows/offload", post(flows_offload))
        .route("/v1/flows/demote", post(flows_demote))
        .route("/v1/trace", post(trace))
        .route("/v1/vnics", get(vnics).post(vnic_add))
        .route("/v1/vnics/stats", get(vnic_stats))
        .route("/v1/vnics/{name}", get(vnic).delete(vnic_del))
        .route("/v1/routes", get(routes).post(route_add).delete(route_del))
        .route("/v1/routes/lookup", get(route_lookup))
        .route("/v1/rules", get(rules).post(rule_add).delete(rule_del))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn(one_error_shape))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_LEN))
        .with_state(daemon)
}

/// Only `/metrics`, for the optional TCP listener.
pub fn metrics_router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn(one_error_shape))
        .with_state(daemon)
}

/// Every failure answers `{"error": ...}`: the ones the router and extractors make itself
/// (405, 413, ...) are rewritten here, and paths too long to be ours are refused before any
/// handler runs.
async fn one_error_shape(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let uri = req.uri().to_string();
    if uri.len() > MAX_URI_LEN {
        return Failure(
            StatusCode::URI_TOO_LONG,
            format!(
                "the request path is {} bytes; this API's paths are under {MAX_URI_LEN}",
                uri.len()
            ),
        )
        .into_response();
    }
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let allow = resp
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let path = uri.split('?').next().unwrap_or(&uri).to_string();
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => format!(
            "{method} is not allowed on {path}{}",
            allow
                .as_deref()
                .map_or(String::new(), |a| format!("; use {a}"))
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the request body is over the limit of {MAX_BODY_LEN} bytes")
        }
        _ if text.is_empty() => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
        _ => text,
    };
    let mut out = Failure(status, message).into_response();
    if let Some(a) = allow
        && let Ok(v) = a.parse()
    {
        out.headers_mut().insert(header::ALLOW, v);
    }
    out
}

async fn not_found(uri: axum::http::Uri) -> Failure {
    Failure(
        StatusCode::NOT_FOUND,
        format!("no such endpoint {uri}; this daemon serves {ENDPOINTS}"),
    )
}

/// Parses a JSON object body, or says what was expected (`[]`, `null` and the like are not
/// a request to change nothing).
fn body<T: DeserializeOwned>(bytes: &[u8], example: &str) -> Result<T, Failure> {
    let bad = |why: String| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("bad request body: {why}; expected a JSON object like {example}"),
        )
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if !value.is_object() {
        return Err(bad(format!("got {}", kind(&value))));
    }
    serde_json::from_value(value).map_err(|e| bad(e.to_string()))
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// `If-Match: "7"` (or `7`): the generation the client's change is based on.
fn expected_generation(headers: &HeaderMap) -> Result<Option<u64>, Failure> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .map(|s| s.trim().trim_matches('"'))
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            Failure(
                StatusCode::BAD_REQUEST,
                "If-Match must be the desired state's generation, like \"7\"".into(),
            )
        })
}

async fn status(State(d): Shared) -> Result<impl IntoResponse, Failure> {
    Ok(Json(d.status().await?))
}

async fn vms(State(d): Shared) -> Result<impl IntoResponse, Failure> {
    Ok(Json(d.vms()?))
}

fn no_vm(name: &str, known: &[String]) -> Failure {
    Failure(
        StatusCode::NOT_FOUND,
        format!(
            "no VM named {name:?}; known VMs: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ),
    )
}

async fn vm(State(d): Shared, Path(name): Path<String>) -> Result<impl IntoResponse, Failure> {
    match d.vm(&name)? {
        Ok(view) => Ok(Json(view)),
        Err(known) => Err(no_vm(&name, &known)),
    }
}

/// The VM's view after a change, with what the change did.
fn changed(d: &Daemon, name: &str, change: ChangeView) -> Result<VmChanged, Failure> {
    let vm = d.vm(name)?.ok();
    Ok(VmChanged { vm, change })
}

const VM_EXAMPLE: &str = r#"{"name": "vm4", "port": "tap4", "macs": ["02:00:00:00:00:04"], "ips": ["10.0.0.4/24"], "bandwidth_mbps": 100}"#;

async fn vm_add(
    State(d): Shared,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, Failure> {
    let vm: VmConfig = body(&bytes, VM_EXAMPLE)?;
    let name = vm.name.clone();
    let change = d
        .change(
            Change::AddVm(Box::new(vm)),
            expected_generation(&headers)?,
            false,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(changed(&d, &name, change)?)).into_response())
}

async fn vm_set(
    State(d): Shared,
    Path(name): Path<String>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<impl IntoResponse, Failure> {
    let patch: VmPatch = body(&bytes, r#"{"bandwidth_mbps": 50, "priority": 2}"#)?;
    if patch.is_empty() {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "nothing to change: give at least one of port, macs, ips, rss, priority, \
             prefer_dedicated, team, uplink, team_policy, bandwidth_mbps, burst_kib, \
             allocation_mode, failover_pause_ms"
                .into(),
        ));
    }
    let change = d
        .change(
            Change::SetVm(name.clone(), Box::new(patch)),
            expected_generation(&headers)?,
            false,
        )
        .await?;
    Ok(Json(changed(&d, &name, change)?))
}

async fn vm_del(
    State(d): Shared,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, Failure> {
    Ok(Json(
        d.change(Change::DelVm(name), expected_generation(&headers)?, false)
            .await?,
    ))
}

async fn stats(State(d): Shared) -> Result<impl IntoResponse, Failure> {
    Ok(Json(d.stats()?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    #[serde(default)]
    since: u64,
    /// A feature (`vm`, `port`, `config`, `rss`, `team`) or an event kind.
    #[serde(default)]
    kind: Option<String>,
    /// Seconds to wait for an event when there is none after `since` yet.
    #[serde(default)]
    wait: Option<f64>,
}

async fn events(
    State(d): Shared,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<impl IntoResponse, Failure> {
    let Query(q) = q?;
    let wait = match q.wait {
        Some(w) if w.is_finite() && w >= 0.0 => Duration::from_secs_f64(w).min(MAX_EVENT_WAIT),
        Some(w) => {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                format!("wait={w} is not a number of seconds (0 to 60)"),
            ));
        }
        None => Duration::ZERO,
    };
    Ok(Json(d.events(q.since, q.kind, wait).await))
}

async fn desired(State(d): Shared) -> Result<impl IntoResponse, Failure> {
    Ok(Json(d.desired()?))
}

async fn apply(
    State(d): Shared,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<impl IntoResponse, Failure> {
    let req: ApplyRequest = body(
        &bytes,
        r#"{"config": "instance = \"host\"\n...", "file": "/etc/xnic/host.toml", "dry_run": true}"#,
    )?;
    Ok(Json(
        d.apply(
            &req.config,
            &req.file,
            expected_generation(&headers)?,
            req.dry_run,
        )
        .await?,
    ))
}

async fn down(State(d): Shared) -> Result<impl IntoResponse, Failure> {
    Ok(Json(d.down().await?))
}

async fn rss_status(State(d): Shared) -> Result<impl IntoResponse, Failure> {
    d.rss_status()
        .map(Json)
        .ok_or_else(|| Failure(StatusCode::CONFLICT, NO_RSS.into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Since {
    #[serde(default)]
    since: u64,
}

async fn rss_events(
    State(d): Shared,
    q: Result<Query<Since>, QueryRejection>,
) -> Result<impl IntoResponse, Failure> {
    let Query(q) = q?;
    d.rss_events(q.since)
        .map(Json)
        .ok_or_else(|| Failure(StatusCode::CONFLICT, NO_RSS.into()))
}

const NO_TEAM: &str = "no team is configured: add a [[team]] section to the configuration";

async fn team_status(State(d): Shared) -> Result<impl IntoResponse, Failure> {
    d.team_status()
        .map(Json)
        .ok_or_else(|| Failure(StatusCode::CONFLICT, NO_TEAM.into()))
}

async fn team_events(
    State(d): Shared,
    q: Result<Query<Since>, QueryRejection>,
) -> Result<impl IntoResponse, Failure> {
    let Query(q) = q?;
    d.team_events(q.since)
        .map(Json)
        .ok_or_else(|| Failure(StatusCode::CONFLICT, NO_TEAM.into()))
}

async fn rss_buckets(
    State(d): Shared,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, Failure> {
    match d.rss_buckets(&name)? {
        Some(b) => Ok(Json(b)),
        None => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("no RSS engine named {name:?}"),
        )),
    }
}

/// An RSS state as the CLI takes it (`auto`, `none`, `no-rss`, `shared:NAME`, ...) as a VM's
/// `rss` setting.
fn rss_hint(state: &str) -> String {
    match state {
        "no-rss" => "none".into(),
        s => s
            .strip_prefix("shared:")
            .or_else(|| s.strip_prefix("dedicated:"))
            .unwrap_or(s)
            .to_string(),
    }
}

async fn rss_set(
    State(d): Shared,
    Path(name): Path<String>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<impl IntoResponse, Failure> {
    let req: RssSetRequest = body(&bytes, r#"{"state": "auto"}"#)?;
    if d.rss_status().is_none() {
        return Err(Failure(StatusCode::CONFLICT, NO_RSS.into()));
    }
    let patch = VmPatch {
        rss: req.state.as_deref().map(rss_hint),
        priority: req.priority,
        prefer_dedicated: req.prefer_dedicated,
        ..VmPatch::default()
    };
    if patch.is_empty() {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "nothing to set: give a state, a priority or prefer_dedicated".into(),
        ));
    }
    d.change(
        Change::SetVm(name.clone(), Box::new(patch)),
        expected_generation(&headers)?,
        false,
    )
    .await?;
    d.rss_status()
        .and_then(|s| s.vms.into_iter().find(|v| v.name == name))
        .map(Json)
        .ok_or_else(|| {
            Failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the VM is missing".into(),
            )
        })
}

fn engine_view(d: &Daemon, name: &str) -> Result<Json<xnic_proto::api::RssEngineView>, Failure> {
    d.rss_status()
        .and_then(|s| s.engines.into_iter().find(|e| e.name == name))
        .map(Json)
        .ok_or_else(|| {
            Failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the engine is missing".into(),
            )
        })
}

async fn rss_engine_add(
    State(d): Shared,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<impl IntoResponse, Failure> {
    let req: RssEngineAddRequest = body(
        &bytes,
        r#"{"name": "shared-c", "kind": "shared", "cpus": [2, 3]}"#,
    )?;
    let name = req.name.clone();
    d.change(
        Change::AddEngine(EngineConfig {
            name: req.name,
            kind: req.kind,
            cpus: req.cpus,
        }),
        expected_generation(&headers)?,
        false,
    )
    .await?;
    engine_view(&d, &name)
}

async fn rss_engine_set(
    State(d): Shared,
    Path(name): Path<String>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<impl IntoResponse, Failure> {
    let req: RssEngineSetRequest = body(&bytes, r#"{"cpus": [0, 1]}"#)?;
    d.change(
        Change::SetEngineCpus(name.clone(), req.cpus),
        expected_generation(&headers)?,
        false,
    )
    .await?;
    engine_view(&d, &name)
}

async fn rss_engine_remove(
    State(d): Shared,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, Failure> {
    let before = d.rss_status();
    let on_it: Vec<String> = before
        .as_ref()
        .and_then(|s| s.engines.iter().find(|e| e.name == name))
        .map(|e| e.vms.clone())
        .unwrap_or_default();
    d.change(
        Change::DelEngine(name.clone()),
        expected_generation(&headers)?,
        false,
    )
    .await?;
    Ok(Json(RssEngineRemoved {
        name,
        vms_to_no_rss: on_it,
    }))
}

async fn metrics(State(d): Shared) -> Result<Response, Failure> {
    // A scrape reads every counter map and asks the rings worker: off the async threads.
    let text = tokio::task::spawn_blocking(move || d.metrics())
        .await
        .map_err(|e| anyhow::anyhow!("the metrics scrape failed: {e}"))??;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        Body::from(text),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowsQuery {
    #[serde(default)]
    vm: Option<String>,
}

async fn flows(
    State(d): Shared,
    q: Result<Query<FlowsQuery>, QueryRejection>,
) -> Result<impl IntoResponse, Failure> {
    let Query(q) = q?;
    Ok(Json(d.flows(q.vm.as_deref())?))
}

async fn flow_stats(State(d): Shared) -> Result<impl IntoResponse, Failure> {
    Ok(Json(d.flow_stats()?))
}

const FLOW_REQUEST_EXAMPLE: &str =
    r#"{"proto": "tcp", "port": 443} or {"ids": [1234]} or {"all": true}"#;

/// `offload`: into the fast path; otherwise back to the slow path.
async fn flows_move(
    d: &Daemon,
    bytes: &[u8],
    offload: bool,
) -> Result<Json<FlowRequestView>, Failure> {
    let req: FlowRequest = body(bytes, FLOW_REQUEST_EXAMPLE)?;
    let matched = d.flow_request(offload, &req).await?;
    Ok(Json(FlowRequestView { matched }))
}

async fn flows_offload(
    State(d): Shared,
    bytes: axum::body::Bytes,
) -> Result<impl IntoResponse, Failure> {
    flows_move(&d, &bytes, true).await
}

async fn flows_demote(
    State(d): Shared,
    bytes: axum::body::Bytes,
) -> Result<impl IntoResponse, Failure> {
    flows_move(&d, &bytes, false).await
}

async fn trace(State(d): Shared, bytes: axum::body::Bytes) -> Result<impl IntoResponse, Failure> {
    let req: TraceRequest = body(&bytes, r#"{"port": "vm0p", "frame": "02770000..."}"#)?;
    Ok(Json(d.trace(req).await?))
}

async fn vnics(State(d): Shared) -> Result<impl IntoResponse, Failure> {
    Ok(Json(d.vnics()?))
}

async fn vnic(State(d): Shared, Path(name): Path<String>) -> Result<impl IntoResponse, Failure> {
    Ok(Json(d.vnic(&name)?))
}

async fn vnic_stats(State(d): Shared) -> Result<impl IntoResponse, Failure> {
    Ok(Json(d.vnic_stats()?))
}

const VNIC_EXAMPLE: &str = r#"{"name": "web2", "subnet": "web", "vni": 100, "mac": "02:00:00:00:01:02", "ips": ["10.0.1.11"], "host": "192.0.2.11"}"#;

async fn vnic_add(
    State(d): Shared,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, Failure> {
    let vnic: VnicConfig = body(&bytes, VNIC_EXAMPLE)?;
    let change = Change::Vnic(VnicChange::AddVnic(Box::new(vnic)));
    let view = d
        .change(change, expected_generation(&headers)?, false)
        .await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn vnic_del(
    State(d): Shared,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, Failure> {
    let change = Change::Vnic(VnicChange::DelVnic(name));
    Ok(Json(
        d.change(change, expected_generation(&headers)?, false)
            .await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesQuery {
    #[serde(default)]
    table: Option<String>,
}

async fn routes(
    State(d): Shared,
    q: Result<Query<RoutesQuery>, QueryRejection>,
) -> Result<impl IntoResponse, Failure> {
    let Query(q) = q?;
    Ok(Json(d.routes(q.table.as_deref())?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupQuery {
    vnic: String,
    addr: String,
}

async fn route_lookup(
    State(d): Shared,
    q: Result<Query<LookupQuery>, QueryRejection>,
) -> Result<impl IntoResponse, Failure> {
    let Query(q) = q?;
    Ok(Json(d.route_lookup(&q.vnic, &q.addr)?))
}

async fn route_add(
    State(d): Shared,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, Failure> {
    let req: RouteAddRequest = body(
        &bytes,
        r#"{"table": "web", "dst": "10.9.0.0/16", "via": "router:core"}"#,
    )?;
    let change = Change::Vnic(VnicChange::AddRoute {
        table: req.table,
        route: xnic_proto::config::RouteConfig {
            dst: req.dst,
            via: req.via,
        },
    });
    let view = d
        .change(change, expected_generation(&headers)?, false)
        .await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteDelQuery {
    table: String,
    dst: String,
}

async fn route_del(
    State(d): Shared,
    headers: HeaderMap,
    q: Result<Query<RouteDelQuery>, QueryRejection>,
) -> Result<impl IntoResponse, Failure> {
    let Query(q) = q?;
    let change = Change::Vnic(VnicChange::DelRoute {
        table: q.table,
        dst: q.dst,
    });
    Ok(Json(
        d.change(change, expected_generation(&headers)?, false)
            .await?,
    ))
}

async fn rules(State(d): Shared) -> impl IntoResponse {
    Json(d.rules())
}

async fn rule_add(
    State(d): Shared,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Result<Response, Failure> {
    let req: RuleAddRequest = body(
        &bytes,
        r#"{"list": "web", "direction": "ingress", "rule": {"action": "allow", "proto": "tcp", "cidr": "0.0.0.0/0", "ports": "443"}, "at": 0}"#,
    )?;
    let change = Change::Vnic(VnicChange::AddRule {
        list: req.list,
        direction: RuleDirection::parse(&req.direction)?,
        rule: req.rule,
        at: req.at,
    });
    let view = d
        .change(change, expected_generation(&headers)?, false)
        .await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDelQuery {
    list: String,
    direction: String,
    index: usize,
}

async fn rule_del(
    State(d): Shared,
    headers: HeaderMap,
    q: Result<Query<RuleDelQuery>, QueryRejection>,
) -> Result<impl IntoResponse, Failure> {
    let Query(q) = q?;
    let change = Change::Vnic(VnicChange::DelRule {
        list: q.list,
        direction: RuleDirection::parse(&q.direction)?,
        index: q.index,
    });
    Ok(Json(
        d.change(change, expected_generation(&headers)?, false)
            .await?,
    ))
}
