//! The floor relay: the least a Twilio ⇄ agent relay on our stack (tokio + tungstenite +
//! serde_json) can do, as a benchmark fixture for `media-ws`. μ-law passthrough, no auth, no
//! guards, no pacing, no metrics. Same WebSocket buffer sizes as `media-ws`.
//!
//! `FLOOR_PORT=0 AGENT_URL=ws://127.0.0.1:9000/v1/convai/conversation cargo run --release
//! --example floor_relay` prints `listening <addr>`, then relays until killed.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

#[tokio::main]
async fn main() {
    let port = std::env::var("FLOOR_PORT").unwrap_or_else(|_| "0".into());
    let agent_url = std::env::var("AGENT_URL").expect("AGENT_URL is required");
    let listener = TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .expect("bind");
    println!("listening {}", listener.local_addr().expect("bound"));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let agent_url = agent_url.clone();
        tokio::spawn(async move {
            let _ = relay(stream, &agent_url).await;
        });
    }
}

async fn relay(stream: TcpStream, agent_url: &str) -> Result<(), Box<dyn std::error::Error>> {
    stream.set_nodelay(true)?;
    let mut twilio = tokio_tungstenite::accept_async_with_config(stream, Some(config())).await?;
    // Wait for `start`: it carries the streamSid every outbound message needs.
    let stream_sid = loop {
        let Some(msg) = twilio.next().await else {
            return Ok(());
        };
        if let Message::Text(t) = msg? {
            let v: Value = serde_json::from_str(t.as_str())?;
            if v["event"] == "start" {
                break v["streamSid"].as_str().unwrap_or_default().to_string();
            }
        }
    };
    let (mut agent, _) =
        tokio_tungstenite::connect_async_with_config(agent_url, Some(config()), true).await?;
    agent
        .send(Message::text(
            r#"{"type":"conversation_initiation_client_data"}"#,
        ))
        .await?;
    loop {
        tokio::select! {
            msg = twilio.next() => {
                let Some(Ok(Message::Text(t))) = msg else { break };
                let v: Value = serde_json::from_str(t.as_str())?;
                match v["event"].as_str() {
                    Some("media") => {
                        let payload = v["media"]["payload"].as_str().unwrap_or_default();
                        agent
                            .send(Message::text(format!(r#"{{"user_audio_chunk":"{payload}"}}"#)))
                            .await?;
                    }
                    Some("stop") => break,
                    _ => {}
                }
            }
            msg = agent.next() => {
                let Some(Ok(Message::Text(t))) = msg else { break };
                let v: Value = serde_json::from_str(t.as_str())?;
                if v["type"] == "audio" {
                    let payload = v["audio_event"]["audio_base_64"].as_str().unwrap_or_default();
                    twilio
                        .send(Message::text(format!(
                            r#"{{"event":"media","streamSid":"{stream_sid}","media":{{"payload":"{payload}"}}}}"#
                        )))
                        .await?;
                }
            }
        }
    }
    let close = |reason: &'static str| CloseFrame {
        code: CloseCode::Normal,
        reason: reason.into(),
    };
    let _ = agent.close(Some(close("call ended"))).await;
    twilio.close(Some(close("stream stopped"))).await?;
    // Drain until the peer's close so the TCP connection ends cleanly.
    while let Some(Ok(_)) = twilio.next().await {}
    Ok(())
}
