//! The per-frame round trip allocates nothing in steady state, socket writes included: a
//! counting global allocator watches the bridge's own work — read a Twilio `media` off its
//! socket, relay it, write the agent's `user_audio_chunk` to the agent socket; read the agent's
//! `audio`, transcode, pace, write Twilio `media` — over real WebSocket framing on in-memory
//! pipes. Only the test's own peers (which play Twilio and the agent) are not counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use media_orchestrator::audio::AudioFormat;
use media_orchestrator::call::drain;
use media_orchestrator::metrics::Metrics;
use media_orchestrator::relay::transcode::ToAgent;
use media_orchestrator::relay::{
    AgentMode, ControlPolicy, Input, Relay, RelayConfig, StreamConfig,
};
use media_orchestrator::ws::Conn;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::time::Instant;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The production socket settings (see `AppState::websocket_config`).
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(2 << 20)
}

async fn pipe() -> (
    WebSocketStream<tokio::io::DuplexStream>,
    WebSocketStream<tokio::io::DuplexStream>,
    WebSocketStream<tokio::io::DuplexStream>,
    WebSocketStream<tokio::io::DuplexStream>,
) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (c, d) = tokio::io::duplex(1 << 16);
    (
        // The bridge's two sockets: a server to Twilio, a client to the agent.
        WebSocketStream::from_raw_socket(a, Role::Server, Some(config())).await,
        WebSocketStream::from_raw_socket(c, Role::Client, Some(config())).await,
        // The peers.
        WebSocketStream::from_raw_socket(b, Role::Client, None).await,
        WebSocketStream::from_raw_socket(d, Role::Server, None).await,
    )
}

fn relay_config(agent: AgentMode) -> RelayConfig {
    RelayConfig {
        stream: StreamConfig {
            idle_timeout: Duration::from_secs(3600),
            keepalive: Duration::from_secs(3600),
            ..StreamConfig::default()
        },
        agent,
        control: ControlPolicy {
            agent_silence: Duration::from_secs(3600),
            ..ControlPolicy::without_rest()
        },
        context: None,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn steady_state_round_trips_allocate_nothing() {
    for format in [
        AudioFormat::Ulaw8000,
        AudioFormat::Pcm(16000),
        AudioFormat::Pcm(24000),
    ] {
        let (twilio_sock, agent_sock, mut twilio, mut agent) = pipe().await;
        let mut tw = Conn::new(twilio_sock, 1 << 20);
        let mut el = Conn::new(agent_sock, 1 << 16);
        let metrics = Metrics::new();
        let t0 = Instant::now();
        let mut relay = Relay::new(relay_config(AgentMode::Remote { binary: false }), None, t0);

        // Set-up (not counted): start, agent connected, metadata in `format`.
        relay.handle(
            Input::TwilioText(r#"{"event":"start","start":{"streamSid":"MZ1","callSid":"CA1"},"streamSid":"MZ1"}"#),
            t0,
        );
        assert!(drain(&mut relay, &mut tw, Some(&mut el), &metrics, t0).is_some());
        relay.handle(Input::AgentConnected, t0);
        drain(&mut relay, &mut tw, Some(&mut el), &metrics, t0);
        let _init = agent.next().await.unwrap().unwrap();
        let name = format.name();
        relay.handle(
            Input::AgentText(&format!(
                r#"{{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{{"agent_output_audio_format":"{name}","user_input_audio_format":"{name}"}}}}"#
            )),
            t0,
        );

        let frame: Vec<u8> = (0..160u32).map(|i| (i * 37 % 251) as u8).collect();
        let media = format!(
            r#"{{"event":"media","sequenceNumber":"5","media":{{"track":"inbound","chunk":"4","timestamp":"80","payload":"{}"}},"streamSid":"MZ1"}}"#,
            STANDARD.encode(&frame)
        );
        let agent_raw = ToAgent::new(format).unwrap().raw(&frame).to_vec();
        let agent_audio = format!(
            r#"{{"type":"audio","audio_event":{{"audio_base_64":"{}","event_id":3}}}}"#,
            STANDARD.encode(&agent_raw)
        );

        let mut counted = 0usize;
        for i in 0..150u64 {
            let t = t0 + Duration::from_millis(20 * i);
            // Twilio sends a frame (the peer: not counted).
            twilio.send(Message::text(media.clone())).await.unwrap();
            // The bridge: read it, relay it, write it to the agent.
            let region = Region::new(GLOBAL);
            {
                let msg = tw.next().await.unwrap().unwrap();
                let Message::Text(text) = &msg else {
                    panic!("text")
                };
                relay.handle(Input::TwilioText(text.as_str()), t);
                drop(msg);
                drain(&mut relay, &mut tw, Some(&mut el), &metrics, t);
            }
            let stats = region.change();
            if i >= 50 {
                counted += stats.allocations + stats.reallocations;
            }
            // The agent reads it and answers with a frame of its voice (not counted).
            let _chunk = agent.next().await.unwrap().unwrap();
            agent
                .send(Message::text(agent_audio.clone()))
                .await
                .unwrap();
            // The bridge: read the agent's audio, pace it, write Twilio media.
            let region = Region::new(GLOBAL);
            {
                let msg = el.next().await.unwrap().unwrap();
                let Message::Text(text) = &msg else {
                    panic!("text")
                };
                relay.handle(Input::AgentText(text.as_str()), t);
                drop(msg);
                drain(&mut relay, &mut tw, Some(&mut el), &metrics, t);
            }
            let stats = region.change();
            if i >= 50 {
                counted += stats.allocations + stats.reallocations;
            }
            // Twilio reads what was released (not counted).
            while relay.counters.frames_out > 0 && twilio_pending(&mut twilio).await {}
        }
        assert!(
            relay.counters.frames_out >= 100,
            "{format:?}: audio reached Twilio"
        );
        assert_eq!(
            counted, 0,
            "{format:?}: allocations in 100 steady-state round trips (both directions, writes included)"
        );
    }
}

/// Reads one message if one is ready without waiting.
async fn twilio_pending(ws: &mut WebSocketStream<tokio::io::DuplexStream>) -> bool {
    tokio::time::timeout(Duration::from_millis(1), ws.next())
        .await
        .is_ok()
}
