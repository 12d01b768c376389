//! The daemon's side of the API.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};

use super::types::ApiError;
use crate::daemon::Daemon;

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
            "no such endpoint {uri}; this daemon serves /v1/status, /v1/vms, /v1/vms/NAME, /v1/stats, /v1/down (POST) and /metrics"
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

async fn metrics(State(d): Shared) -> Result<impl IntoResponse, Failure> {
    let stats = d.stats()?;
    let text = super::metrics::encode(&d.instance(), &stats)
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}
