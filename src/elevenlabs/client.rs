//! Reaching an ElevenLabs conversation: the signed URL for private agents, the WebSocket with
//! small buffers, bounded retries with backoff. What is said on the socket is the relay's
//! (the relay's); the call's own task owns the socket.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::ElevenLabsConfig;
use crate::retry::Backoff;
use crate::secrets::SecretHandle;

/// An agent conversation socket.
pub type AgentSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Longest wait between connect attempts.
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(2);
/// Largest signed-URL response body read.
const SIGNED_URL_BODY_LIMIT: usize = 64 * 1024;

/// Why connecting to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The signed-URL endpoint refused (4xx): retrying will not help.
    #[error("signed url request refused with status {0}")]
    Refused(u16),
    /// The signed-URL endpoint failed (5xx) or its answer was unusable.
    #[error("signed url request failed")]
    SignedUrl,
    /// The configuration cannot produce a URL.
    #[error("agent url invalid")]
    Url,
    /// The API key is not available (its SSM parameter was never loaded) or not a valid
    /// header value.
    #[error("agent api key unavailable")]
    Key,
    /// Network or WebSocket handshake failure.
    #[error("agent websocket connect failed")]
    WebSocket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    /// The attempt took longer than the connect timeout.
    #[error("agent connect timed out")]
    Timeout,
    /// ElevenLabs refused the conversation for concurrency (429
    /// `too_many_concurrent_requests`, on the signed URL or the socket): the plan is full.
    #[error("agent concurrency limit reached")]
    Busy,
}

impl ConnectError {
    fn retryable(&self) -> bool {
        !matches!(self, Self::Refused(_) | Self::Url | Self::Key | Self::Busy)
    }
}

/// HTTP 429 means two things at ElevenLabs: `system_busy` (their load: retrying helps) or
/// `too_many_concurrent_requests` (our plan is full: it does not).
fn too_many(body: &[u8]) -> ConnectError {
    if String::from_utf8_lossy(body).contains("system_busy") {
        ConnectError::SignedUrl
    } else {
        ConnectError::Busy
    }
}

/// The ElevenLabs agent: starts one conversation per call.
#[derive(Debug, Clone)]
pub struct ElevenLabs {
    config: Arc<ElevenLabsConfig>,
    api_key: Option<SecretHandle>,
    http: HttpsClient,
}

impl ElevenLabs {
    /// An agent with `config`; `api_key` is the resolved `ELEVENLABS_API_KEY` (read at each
    /// connect, so a rotated key is used without a restart).
    ///
    /// # Errors
    /// An I/O error when the system's root certificates cannot be loaded.
    pub fn new(config: ElevenLabsConfig, api_key: Option<SecretHandle>) -> std::io::Result<Self> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        Ok(Self {
            config: Arc::new(config),
            api_key,
            http,
        })
    }
}

impl ElevenLabs {
    /// Whether caller audio goes as raw PCM16LE 16 kHz binary frames (legacy).
    pub fn forward_binary(&self) -> bool {
        self.config.forward_binary
    }

    /// Opens one conversation's socket: a signed URL first for private agents, then the
    /// WebSocket, with bounded retries and exponential backoff, all within the connect
    /// deadline (the caller hears silence meanwhile, and only a second of their audio is held).
    ///
    /// # Errors
    /// The [`ConnectError`] of the last attempt; [`ConnectError::Timeout`] at the deadline.
    pub async fn connect(&self) -> Result<AgentSocket, ConnectError> {
        tokio::time::timeout(self.config.connect_deadline, connect(self))
            .await
            .unwrap_or(Err(ConnectError::Timeout))
    }
}

/// Connects with bounded retries and exponential backoff.
async fn connect(agent: &ElevenLabs) -> Result<AgentSocket, ConnectError> {
    let cfg = &agent.config;
    let mut attempt = 0;
    loop {
        let result = tokio::time::timeout(cfg.connect_timeout, connect_once(agent))
            .await
            .unwrap_or(Err(ConnectError::Timeout));
        match result {
            Ok(socket) => return Ok(socket),
            Err(e) if !e.retryable() || attempt >= cfg.connect_retries => return Err(e),
            Err(e) => {
                tracing::info!(error = %e, attempt, "agent connect failed, retrying");
                tokio::time::sleep(Backoff::new(cfg.retry_backoff, MAX_BACKOFF).delay(attempt))
                    .await;
                attempt += 1;
            }
        }
    }
}

fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        // 4 KiB read chunks: per-call memory stays small; a large agent message still
        // arrives whole (the message buffer grows to it, up to the limit below).
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20))
}

async fn connect_once(agent: &ElevenLabs) -> Result<AgentSocket, ConnectError> {
    let cfg = &agent.config;
    let key = match &agent.api_key {
        Some(handle) => Some(handle.current().ok_or(ConnectError::Key)?),
        None => None,
    };
    let (url, send_key) = match (&cfg.ws_url, &cfg.agent_id, &key) {
        (Some(url), _, key) => (url.clone(), key.is_some()),
        (None, Some(id), Some(key)) => (signed_url(agent, id, key.expose()).await?, false),
        (None, Some(id), None) => (public_url(&cfg.api_base, id)?, false),
        (None, None, _) => return Err(ConnectError::Url),
    };
    let mut request = url.into_client_request().map_err(|_| ConnectError::Url)?;
    if let (true, Some(key)) = (send_key, &key) {
        let value = key.expose().parse().map_err(|_| ConnectError::Key)?;
        request.headers_mut().insert("xi-api-key", value);
    }
    let (socket, _) = tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(websocket_config()),
        true,
        None,
    )
    .await
    .map_err(|e| match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) if resp.status().as_u16() == 429 => {
            too_many(resp.body().as_deref().unwrap_or_default())
        }
        e => ConnectError::WebSocket(Box::new(e)),
    })?;
    Ok(socket)
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `wss://…/v1/convai/conversation?agent_id=<id>` from the REST base.
fn public_url(api_base: &str, agent_id: &str) -> Result<String, ConnectError> {
    let host = api_base
        .strip_prefix("https://")
        .map(|h| ("wss", h))
        .or_else(|| api_base.strip_prefix("http://").map(|h| ("ws", h)))
        .ok_or(ConnectError::Url)?;
    Ok(format!(
        "{}://{}/v1/convai/conversation?agent_id={}",
        host.0,
        host.1.trim_end_matches('/'),
        encode(agent_id)
    ))
}

/// Fetches a signed conversation URL (private agents), valid for one conversation start.
async fn signed_url(agent: &ElevenLabs, agent_id: &str, key: &str) -> Result<String, ConnectError> {
    #[derive(serde::Deserialize)]
    struct SignedUrl {
        signed_url: String,
    }
    let cfg = &agent.config;
    let uri = format!(
        "{}/v1/convai/conversation/get-signed-url?agent_id={}",
        cfg.api_base.trim_end_matches('/'),
        encode(agent_id)
    );
    let request = hyper::Request::get(uri)
        .header("xi-api-key", key)
        .body(Empty::<Bytes>::new())
        .map_err(|_| ConnectError::Url)?;
    let response = agent
        .http
        .request(request)
        .await
        .map_err(|_| ConnectError::SignedUrl)?;
    let status = response.status();
    if status.as_u16() == 429 {
        let body = Limited::new(response.into_body(), SIGNED_URL_BODY_LIMIT)
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        return Err(too_many(&body));
    }
    if status.is_client_error() {
        return Err(ConnectError::Refused(status.as_u16()));
    }
    if !status.is_success() {
        return Err(ConnectError::SignedUrl);
    }
    let body = Limited::new(response.into_body(), SIGNED_URL_BODY_LIMIT)
        .collect()
        .await
        .map_err(|_| ConnectError::SignedUrl)?
        .to_bytes();
    let parsed: SignedUrl = serde_json::from_slice(&body).map_err(|_| ConnectError::SignedUrl)?;
    Ok(parsed.signed_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_plan_is_told_from_elevenlabs_being_busy() {
        let full = br#"{"detail":{"status":"too_many_concurrent_requests","message":"x"}}"#;
        assert!(matches!(too_many(full), ConnectError::Busy));
        assert!(!ConnectError::Busy.retryable());
        let busy = br#"{"detail":{"status":"system_busy"}}"#;
        assert!(too_many(busy).retryable());
        // No body to tell by: the plan is full (a retry would be refused the same way).
        assert!(matches!(too_many(b""), ConnectError::Busy));
    }

    #[test]
    fn public_url_is_built_from_the_rest_base() {
        assert_eq!(
            public_url("https://api.elevenlabs.io", "agent 1").unwrap(),
            "wss://api.elevenlabs.io/v1/convai/conversation?agent_id=agent+1"
        );
        assert_eq!(
            public_url("http://127.0.0.1:9/", "a").unwrap(),
            "ws://127.0.0.1:9/v1/convai/conversation?agent_id=a"
        );
        assert!(public_url("ftp://x", "a").is_err());
    }
}
