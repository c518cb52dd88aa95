//! The `--agent-listen` endpoint: a WebSocket server that plays an ElevenLabs conversational
//! agent which echoes. It answers `conversation_initiation_client_data` with
//! `conversation_initiation_metadata` in one format (both directions), returns every
//! `user_audio_chunk` as an `audio` event (same base64, increasing `event_id`) and answers
//! nothing else. For loopback load tests only: no auth, no TLS.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::SimError;
use media_orchestrator::audio::AudioFormat;

/// The path the echo endpoint is meant to be dialled on (any path is accepted).
pub const AGENT_PATH: &str = "/v1/convai/conversation";

/// Counters of a running echo endpoint.
#[derive(Debug, Default)]
pub struct AgentCounters {
    /// Conversations accepted.
    pub conversations: AtomicU64,
    /// `user_audio_chunk` messages echoed.
    pub chunks: AtomicU64,
}

/// A bound echo agent endpoint.
#[derive(Debug)]
pub struct EchoAgent {
    listener: TcpListener,
    format: AudioFormat,
    counters: Arc<AgentCounters>,
}

impl EchoAgent {
    /// Binds `addr` (port 0 picks a free port).
    ///
    /// # Errors
    ///
    /// [`SimError::Listen`] if the address cannot be bound.
    pub async fn bind(addr: &str, format: AudioFormat) -> Result<Self, SimError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        Ok(Self {
            listener,
            format,
            counters: Arc::default(),
        })
    }

    /// The bound address.
    ///
    /// # Errors
    ///
    /// The OS error if the socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The conversation URL to give `media-ws` as `ELEVENLABS_WS_URL`.
    ///
    /// # Errors
    ///
    /// The OS error if the socket has no local address.
    pub fn url(&self) -> std::io::Result<String> {
        Ok(format!("ws://{}{AGENT_PATH}", self.local_addr()?))
    }

    /// Shared counters (readable while [`serve`](Self::serve) runs).
    pub fn counters(&self) -> Arc<AgentCounters> {
        Arc::clone(&self.counters)
    }

    /// Accepts conversations until `stop` is cancelled, then closes them all with 1000.
    pub async fn serve(self, stop: CancellationToken) {
        let tracker = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                a = self.listener.accept() => a,
            };
            let Ok((stream, _)) = accepted else {
                // Out of descriptors or similar: keep serving the calls we have.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true); // best effort; latency only
            let counters = Arc::clone(&self.counters);
            tracker.spawn(conversation(stream, self.format, counters, stop.clone()));
        }
        tracker.close();
        tracker.wait().await;
    }
}

/// Small buffers: a conversation carries 20 ms frames.
fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", default)]
    kind: Option<&'a str>,
    #[serde(borrow, default)]
    user_audio_chunk: Option<&'a str>,
}

/// The metadata message announcing `format` for both directions.
pub fn metadata(format: AudioFormat) -> String {
    format!(
        r#"{{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{{"conversation_id":"conv_sim","agent_output_audio_format":"{0}","user_input_audio_format":"{0}"}}}}"#,
        format.name()
    )
}

/// The `audio` event carrying `b64` (already base64).
pub fn audio_event(b64: &str, event_id: u64, out: &mut String) {
    out.clear();
    out.push_str(r#"{"type":"audio","audio_event":{"audio_base_64":""#);
    out.push_str(b64);
    out.push_str(r#"","event_id":"#);
    out.push_str(&event_id.to_string());
    out.push_str("}}");
}

async fn conversation(
    stream: TcpStream,
    format: AudioFormat,
    counters: Arc<AgentCounters>,
    stop: CancellationToken,
) {
    let Ok(mut ws) =
        tokio_tungstenite::accept_async_with_config(stream, Some(websocket_config())).await
    else {
        return;
    };
    counters.conversations.fetch_add(1, Ordering::Relaxed);
    let mut event_id = 0u64;
    let mut out = String::with_capacity(512);
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => {
                // Closing: the peer may already be gone, nothing to report.
                let _ = ws.close(None).await;
                return;
            }
            m = ws.next() => m,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
            Some(Ok(_)) => continue,
        };
        let Ok(incoming) = serde_json::from_str::<Incoming<'_>>(text.as_str()) else {
            continue;
        };
        let reply = if let Some(b64) = incoming.user_audio_chunk {
            event_id += 1;
            counters.chunks.fetch_add(1, Ordering::Relaxed);
            audio_event(b64, event_id, &mut out);
            Message::text(out.as_str())
        } else if incoming.kind == Some("conversation_initiation_client_data") {
            Message::text(metadata(format))
        } else {
            continue;
        };
        if ws.send(reply).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media_orchestrator::elevenlabs::message::{parse, ServerEvent};

    #[test]
    fn messages_parse_as_the_relay_expects() {
        assert_eq!(
            parse(&metadata(AudioFormat::Pcm(16000))).unwrap(),
            ServerEvent::Metadata {
                input: AudioFormat::Pcm(16000),
                output: AudioFormat::Pcm(16000),
                conversation_id: Some("conv_sim".into()),
            }
        );
        let mut out = String::new();
        audio_event("AAEC", 7, &mut out);
        assert_eq!(
            parse(&out).unwrap(),
            ServerEvent::Audio {
                audio_b64: "AAEC".into(),
                event_id: Some(7)
            }
        );
    }
}
