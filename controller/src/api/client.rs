//! The CLI's side of the API: HTTP/1.1 over the daemon's Unix socket.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::Request;
pub use hyper::{Method, StatusCode, body::Bytes};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use super::types::ApiError;

pub struct Client {
    socket: PathBuf,
    instance: String,
}

impl Client {
    pub fn new(instance: &str) -> Client {
        Client {
            socket: crate::config::socket_path(instance),
            instance: instance.to_string(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn connect(&self) -> anyhow::Result<UnixStream> {
        match UnixStream::connect(&self.socket).await {
            Ok(s) => Ok(s),
            Err(e) => match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => bail!(
                    "the xnic daemon for instance {:?} is not running (no answer on {}); \
                     start it with `xnic run --config FILE`",
                    self.instance,
                    self.socket.display()
                ),
                std::io::ErrorKind::PermissionDenied => bail!(
                    "permission denied on {}: the control socket is root-only; run this with sudo",
                    self.socket.display()
                ),
                _ => Err(e).with_context(|| format!("cannot connect to {}", self.socket.display())),
            },
        }
    }

    /// Sends a request and returns the status and body.
    pub async fn request(&self, method: Method, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
        self.request_with(method, path, None).await
    }

    /// Sends a request with an optional JSON body.
    pub async fn request_with(
        &self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.send(method, path, json, None).await
    }

    /// Like [`Self::request_with`], for a change based on the desired state's `generation`
    /// (refused with 412 when it changed meanwhile).
    pub async fn request_if_match(
        &self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
        generation: u64,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.send(method, path, json, Some(generation)).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
        generation: Option<u64>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let stream = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake with the daemon failed")?;
        tokio::spawn(conn);
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "xnic");
        if let Some(g) = generation {
            builder = builder.header("if-match", format!("\"{g}\""));
        }
        let req = match json {
            Some(body) => builder
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)).boxed())?,
            None => builder.body(Empty::<Bytes>::new().boxed())?,
        };
        let resp = sender
            .send_request(req)
            .await
            .context("the daemon closed the connection")?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<T> {
        let (status, body) = self.request_with(method, path, body).await?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<ApiError>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(anyhow!(msg));
        }
        serde_json::from_slice(&body)
            .with_context(|| format!("unexpected answer from the daemon to {path}"))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.json(Method::GET, path, None).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.json(Method::POST, path, None).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.json(Method::DELETE, path, None).await
    }

    /// POSTs `body` as JSON.
    pub async fn post_json<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.json(Method::POST, path, Some(serde_json::to_vec(body)?))
            .await
    }

    /// Sends `body` as JSON with `method` (PATCH, PUT, ...).
    pub async fn send_json<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.json(method, path, Some(serde_json::to_vec(body)?))
            .await
    }

    /// Whether a daemon answers on the socket.
    pub async fn is_running(&self) -> bool {
        UnixStream::connect(&self.socket).await.is_ok()
    }
}
