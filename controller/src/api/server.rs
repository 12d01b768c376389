//! The daemon's side of the API.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};

use super::types::{ApiError, RssEngineAddRequest, RssEngineSetRequest, RssSetRequest};
use crate::daemon::{ApiFailure, Daemon};

type Shared = State<Arc<Daemon>>;

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

pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/vms", get(vms))
        .route("/v1/vms/{name}", get(vm))
        .route("/v1/stats", get(stats))
        .route("/v1/down", post(down))
        .route("/v1/rss", get(rss_status))
        .route("/v1/rss/events", get(rss_events))
        .route("/v1/rss/engines", post(rss_engine_add))
        .route(
            "/v1/rss/engines/{name}",
            post(rss_engine_set).delete(rss_engine_remove),
        )
        .route("/v1/rss/engines/{name}/buckets", get(rss_buckets))
        .route("/v1/rss/vms/{name}", post(rss_set))
        .route("/v1/team", get(team_status))
        .route("/v1/team/events", get(team_events))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(daemon)
}

/// Only `/metrics`, for the optional TCP listener.
pub fn metrics_router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(daemon)
}

async fn not_found(uri: axum::http::Uri) -> Failure {
    Failure(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint {uri}; this daemon serves /v1/status, /v1/vms, /v1/vms/NAME, /v1/stats, /v1/down (POST), /v1/rss, /v1/rss/events, /v1/rss/vms/NAME (POST), /v1/rss/engines (POST), /v1/rss/engines/NAME (POST, DELETE), /v1/rss/engines/NAME/buckets, /v1/team, /v1/team/events and /metrics"
        ),
    )
}

async fn status(State(d): Shared) -> Result<impl IntoResponse, Failure> {
    Ok(Json(d.status().await?))
}

async fn vms(State(d): Shared) -> Result<impl IntoResponse, Failure> {
    Ok(Json(d.vms()?))
}

async fn vm(State(d): Shared, Path(name): Path<String>) -> Result<impl IntoResponse, Failure> {
    match d.vm(&name)? {
        Ok(view) => Ok(Json(view)),
        Err(known) => Err(Failure(
            StatusCode::NOT_FOUND,
            format!(
                "no VM named {name:?}; known VMs: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        )),
    }
}

async fn stats(State(d): Shared) -> Result<impl IntoResponse, Failure> {
    Ok(Json(d.stats()?))
}

async fn down(State(d): Shared) -> Result<impl IntoResponse, Failure> {
    Ok(Json(d.down()?))
}

const NO_RSS: &str = "RSS is not configured: add an [rss] section to the configuration";

impl From<ApiFailure> for Failure {
    fn from(f: ApiFailure) -> Self {
        match f {
            ApiFailure::NotConfigured => Failure(StatusCode::CONFLICT, NO_RSS.into()),
            ApiFailure::NotFound(m) => Failure(StatusCode::NOT_FOUND, m),
            ApiFailure::BadRequest(m) => Failure(StatusCode::BAD_REQUEST, m),
            ApiFailure::Internal(m) => Failure(StatusCode::INTERNAL_SERVER_ERROR, m),
        }
    }
}

async fn rss_status(State(d): Shared) -> Result<impl IntoResponse, Failure> {
    d.rss_status()
        .map(Json)
        .ok_or_else(|| ApiFailure::NotConfigured.into())
}

#[derive(serde::Deserialize)]
struct Since {
    #[serde(default)]
    since: u64,
}

async fn rss_events(
    State(d): Shared,
    Query(q): Query<Since>,
) -> Result<impl IntoResponse, Failure> {
    d.rss_events(q.since)
        .map(Json)
        .ok_or_else(|| ApiFailure::NotConfigured.into())
}

const NO_TEAM: &str = "no team is configured: add a [[team]] section to the configuration";

async fn team_status(State(d): Shared) -> Result<impl IntoResponse, Failure> {
    d.team_status()
        .map(Json)
        .ok_or_else(|| Failure(StatusCode::CONFLICT, NO_TEAM.into()))
}

async fn team_events(
    State(d): Shared,
    Query(q): Query<Since>,
) -> Result<impl IntoResponse, Failure> {
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

/// Parses a JSON body, or says what was expected.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8], example: &str) -> Result<T, Failure> {
    serde_json::from_slice(bytes).map_err(|e| {
        Failure(
            StatusCode::BAD_REQUEST,
            format!("bad request body: {e}; expected JSON like {example}"),
        )
    })
}

async fn rss_set(
    State(d): Shared,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<impl IntoResponse, Failure> {
    let req: RssSetRequest = body(&bytes, r#"{"state": "auto"}"#)?;
    Ok(Json(d.rss_set(&name, &req)?))
}

async fn rss_engine_add(
    State(d): Shared,
    bytes: axum::body::Bytes,
) -> Result<impl IntoResponse, Failure> {
    let req: RssEngineAddRequest = body(
        &bytes,
        r#"{"name": "shared-c", "kind": "shared", "cpus": [2, 3]}"#,
    )?;
    Ok(Json(d.rss_engine_add(&req)?))
}

async fn rss_engine_set(
    State(d): Shared,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<impl IntoResponse, Failure> {
    let req: RssEngineSetRequest = body(&bytes, r#"{"cpus": [0, 1]}"#)?;
    Ok(Json(d.rss_engine_set(&name, &req)?))
}

async fn rss_engine_remove(
    State(d): Shared,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, Failure> {
    Ok(Json(d.rss_engine_remove(&name)?))
}

async fn metrics(State(d): Shared) -> Result<impl IntoResponse, Failure> {
    let stats = d.stats()?;
    let text = super::metrics::encode(&d.instance(), &stats, d.rss_status(), d.team_status())
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}
