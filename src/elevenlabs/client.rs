//! One call's ElevenLabs conversation: connect (signed URL when needed, bounded retries with
//! backoff), send the initiation data with the call's dynamic variables, adapt to the formats
//! the metadata announces, relay audio both ways, answer pings, report interruptions and
//! the end. Caller audio that arrives before the metadata is held (bounded), not lost.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::message::{self, AudioFormat, InitiationClientData, ServerEvent};
use super::ElevenLabsConfig;
use crate::agent::{backoff, Agent, AgentEnd, AgentEvent, AgentIo, CallStart, SessionFuture};
use crate::relay::transcode::{FromAgent, ToAgent};
use crate::secrets::SecretHandle;

type AgentSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Caller frames held while waiting for the agent's metadata (20 ms each): 1 s.
const PRE_METADATA_FRAMES: usize = 50;
/// Largest signed-URL response body read.
const SIGNED_URL_BODY_LIMIT: usize = 64 * 1024;
/// Custom parameters never passed to the agent: credentials, not conversation data.
const WITHHELD_PARAMETERS: &[&str] = &["token", "authorization"];

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
}

impl ConnectError {
    fn retryable(&self) -> bool {
        !matches!(self, Self::Refused(_) | Self::Url | Self::Key)
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

impl Agent for ElevenLabs {
    fn name(&self) -> &'static str {
        "elevenlabs"
    }

    fn session(&self, call: CallStart, io: AgentIo) -> SessionFuture {
        Box::pin(run(self.clone(), call, io))
    }
}

async fn run(agent: ElevenLabs, call: CallStart, mut io: AgentIo) {
    let state = Arc::clone(&io.state);
    let started = Instant::now();
    let socket = tokio::select! {
        r = connect(&agent) => r,
        // The call ended while we were still connecting.
        () = wait_closed(&mut io) => return,
    };
    let socket = match socket {
        Ok(s) => s,
        Err(e) => {
            state.metrics.agent_event("connect_failed");
            tracing::warn!(error = %e, "agent unreachable");
            // The call is told once; if it is gone there is nobody to tell.
            let _ = io
                .events
                .send(AgentEvent::Ended(AgentEnd::Unreachable))
                .await;
            return;
        }
    };
    let vars: BTreeMap<&str, &str> = call
        .parameters
        .iter()
        .filter(|(k, _)| {
            !WITHHELD_PARAMETERS
                .iter()
                .any(|w| k.eq_ignore_ascii_case(w))
        })
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    tracing::info!(
        connect_ms = started.elapsed().as_millis() as u64,
        dynamic_variables = ?vars.keys().collect::<Vec<_>>(),
        "agent connected"
    );
    let init = InitiationClientData::new(vars).to_json();
    let end = converse(&agent.config, socket, init, &mut io).await;
    tracing::info!(end = ?end, "agent session ended");
    // The call may already be gone; then nobody needs the news.
    let _ = io.events.send(AgentEvent::Ended(end)).await;
}

/// Resolves when the call has dropped its audio sender (frames that arrive meanwhile wait).
async fn wait_closed(io: &mut AgentIo) {
    while !io.audio_in.is_closed() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn converse(
    config: &ElevenLabsConfig,
    mut socket: AgentSocket,
    init: String,
    io: &mut AgentIo,
) -> AgentEnd {
    let metrics = &io.state.metrics;
    if socket.send(Message::text(init)).await.is_err() {
        return AgentEnd::Closed(None);
    }
    let mut to_agent = if config.forward_binary {
        ToAgent::new(AudioFormat::Pcm(16000)).ok()
    } else {
        None
    };
    let mut from_agent: Option<FromAgent> = None;
    let mut held: VecDeque<Bytes> = VecDeque::new();
    let mut bufs = (String::with_capacity(512), String::with_capacity(1024));
    // Grows to the agent's chunk size on first use (kept small for idle calls).
    let mut ulaw = Vec::new();
    loop {
        tokio::select! {
            frame = io.audio_in.recv() => {
                let Some(frame) = frame else {
                    // The call ended: close the conversation normally.
                    close(&mut socket).await;
                    return AgentEnd::Finished;
                };
                match &mut to_agent {
                    Some(t) => {
                        if send_audio(&mut socket, t, config.forward_binary, &frame, &mut bufs).await.is_err() {
                            return AgentEnd::Closed(None);
                        }
                    }
                    None if held.len() < PRE_METADATA_FRAMES => held.push_back(frame),
                    None => metrics.dropped("agent_not_ready", 1),
                }
            }
            msg = socket.next() => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "agent socket failed");
                        return AgentEnd::Closed(None);
                    }
                    None => return AgentEnd::Closed(None),
                };
                let text_msg = match msg {
                    Message::Text(t) => t,
                    Message::Close(frame) => {
                        let code = frame.map(|f| u16::from(f.code));
                        return if code == Some(1000) { AgentEnd::Finished } else { AgentEnd::Closed(code) };
                    }
                    _ => continue,
                };
                let event = match message::parse(text_msg.as_str()) {
                    Ok(e) => e,
                    Err(message::AgentProtocolError::UnknownFormat) => {
                        tracing::warn!("agent announced an unknown audio format");
                        close(&mut socket).await;
                        return AgentEnd::ProtocolError;
                    }
                    Err(message::AgentProtocolError::Malformed) => {
                        metrics.agent_event("malformed");
                        continue;
                    }
                };
                match event {
                    ServerEvent::Metadata { input, output } => {
                        metrics.agent_event("conversation_initiation_metadata");
                        if input != AudioFormat::Ulaw8000 || output != AudioFormat::Ulaw8000 {
                            tracing::warn!(
                                input = input.name(),
                                output = output.name(),
                                "agent audio is not ulaw_8000; transcoding (set the agent to mu-law 8000 Hz for telephony)"
                            );
                        } else {
                            tracing::info!(format = "ulaw_8000", "agent audio passes through");
                        }
                        let (Ok(to), Ok(from)) = (ToAgent::new(input), FromAgent::new(output)) else {
                            close(&mut socket).await;
                            return AgentEnd::ProtocolError;
                        };
                        if !config.forward_binary {
                            to_agent = Some(to);
                        }
                        from_agent = Some(from);
                        if let Some(t) = &mut to_agent {
                            while let Some(frame) = held.pop_front() {
                                if send_audio(&mut socket, t, config.forward_binary, &frame, &mut bufs).await.is_err() {
                                    return AgentEnd::Closed(None);
                                }
                            }
                        }
                    }
                    ServerEvent::Audio { audio_b64, event_id } => {
                        metrics.agent_event("audio");
                        let Some(conv) = &mut from_agent else {
                            metrics.dropped("agent_audio_before_metadata", 1);
                            continue;
                        };
                        if conv.convert(&audio_b64, &mut ulaw).is_err() {
                            metrics.agent_event("malformed");
                            continue;
                        }
                        let event = AgentEvent::Audio { ulaw: Bytes::copy_from_slice(&ulaw), event_id };
                        if io.events.send(event).await.is_err() {
                            close(&mut socket).await;
                            return AgentEnd::Finished;
                        }
                    }
                    ServerEvent::Interruption { event_id } => {
                        metrics.agent_event("interruption");
                        let event = AgentEvent::Interruption { event_id, received_at: Instant::now() };
                        if io.events.send(event).await.is_err() {
                            close(&mut socket).await;
                            return AgentEnd::Finished;
                        }
                    }
                    ServerEvent::Ping { event_id } => {
                        metrics.agent_event("ping");
                        if socket.send(Message::text(message::pong(event_id))).await.is_err() {
                            return AgentEnd::Closed(None);
                        }
                    }
                    ServerEvent::Error { code } => {
                        metrics.agent_event("error");
                        tracing::warn!(code, "agent reported an error");
                    }
                    ServerEvent::Other(kind) => {
                        metrics.agent_event(kind);
                        tracing::debug!(kind, "agent event");
                    }
                }
            }
        }
    }
}

async fn send_audio(
    socket: &mut AgentSocket,
    to_agent: &mut ToAgent,
    binary: bool,
    frame: &[u8],
    (b64, text): &mut (String, String),
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    if binary {
        let raw = to_agent.raw(frame);
        return socket.send(Message::binary(raw.to_vec())).await;
    }
    to_agent.base64(frame, b64);
    message::user_audio_chunk(b64, text);
    socket.send(Message::text(text.as_str())).await
}

async fn close(socket: &mut AgentSocket) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "call ended".into(),
    };
    let closing = async {
        // Best effort: the agent may already be gone.
        let _ = socket.close(Some(frame)).await;
        while let Some(Ok(_)) = socket.next().await {}
    };
    if tokio::time::timeout(Duration::from_secs(2), closing)
        .await
        .is_err()
    {
        tracing::debug!("agent close timed out");
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
                tokio::time::sleep(backoff(cfg.retry_backoff, attempt)).await;
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
    .map_err(|e| ConnectError::WebSocket(Box::new(e)))?;
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
