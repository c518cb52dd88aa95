//! Component tests: a whole call loop over in-memory WebSocket pipes — Twilio on one side,
//! a scripted agent on the other — with no process, no port and (where timing matters)
//! tokio's paused clock.

use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::io::DuplexStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::*;
use crate::elevenlabs::client::ConnectError;
use tokio::time::Instant;

type Pipe = WebSocketStream<DuplexStream>;

/// Both ends of an in-memory WebSocket: (server side, client side).
async fn pipe(buffer: usize) -> (Pipe, Pipe) {
    let (a, b) = tokio::io::duplex(buffer);
    let server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
    let client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
    (server, client)
}

struct TestAgent {
    mode: AgentMode,
    socket: Mutex<Option<Pipe>>,
}

impl AgentConnector for TestAgent {
    type Socket = Pipe;
    type Error = ConnectError;

    fn mode(&self) -> AgentMode {
        self.mode
    }

    async fn connect(&self) -> Result<Pipe, ConnectError> {
        let socket = self.socket.lock().unwrap().take();
        socket.ok_or(ConnectError::Timeout)
    }

    fn plan_full(error: &ConnectError) -> bool {
        matches!(error, ConnectError::Busy)
    }
}

struct TestHost {
    metrics: Metrics,
    refuse: Option<Ending>,
    /// REST requests made: ("hang_up" | "redirect", call sid, twiml), with when.
    rest: Mutex<Vec<(&'static str, String, String, Instant)>>,
}

impl Host for TestHost {
    type Claim = ();

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    async fn claim(&self, _call_sid: &str, bound: bool) -> Result<(), Ending> {
        match self.refuse {
            // Refusals (a duplicate) are of CallSid claims: bound streams only.
            Some(ending) if bound => Err(ending),
            _ => Ok(()),
        }
    }

    async fn overflow(&self, call_sid: &str) -> Result<(), RestError> {
        self.rest.lock().unwrap().push((
            "overflow",
            call_sid.into(),
            String::new(),
            Instant::now(),
        ));
        Ok(())
    }

    async fn hang_up(&self, call_sid: &str) -> Result<(), RestError> {
        self.rest
            .lock()
            .unwrap()
            .push(("hang_up", call_sid.into(), String::new(), Instant::now()));
        Ok(())
    }

    async fn release(&self, _claim: ()) {}

    async fn redirect(&self, call_sid: &str, twiml: &str) -> Result<(), RestError> {
        self.rest
            .lock()
            .unwrap()
            .push(("redirect", call_sid.into(), twiml.into(), Instant::now()));
        Ok(())
    }
}

fn agent(mode: AgentMode, socket: Option<Pipe>) -> TestAgent {
    TestAgent {
        mode,
        socket: Mutex::new(socket),
    }
}

fn host(refuse: Option<Ending>) -> TestHost {
    TestHost {
        metrics: Metrics::new(),
        refuse,
        rest: Mutex::new(Vec::new()),
    }
}

fn text(v: Value) -> Message {
    Message::text(v.to_string())
}

fn start() -> Message {
    text(
        json!({"event":"start","start":{"streamSid":"MZ1","callSid":"CA1","customParameters":{"lang":"en"}},"streamSid":"MZ1"}),
    )
}

fn media(frame: &[u8]) -> Message {
    text(json!({"event":"media","media":{"payload":STANDARD.encode(frame)},"streamSid":"MZ1"}))
}

fn stop() -> Message {
    text(json!({"event":"stop","stop":{},"streamSid":"MZ1"}))
}

/// Reads Twilio's side until the close: (audio heard, marks, close code and reason).
async fn listen(client: &mut Pipe) -> (Vec<u8>, usize, Option<(u16, String)>) {
    let (mut audio, mut marks) = (Vec::new(), 0);
    while let Some(Ok(msg)) = client.next().await {
        match msg {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                match v["event"].as_str() {
                    Some("media") => audio.extend(
                        STANDARD
                            .decode(v["media"]["payload"].as_str().unwrap())
                            .unwrap(),
                    ),
                    Some("mark") => marks += 1,
                    _ => {}
                }
            }
            Message::Close(frame) => {
                let close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                return (audio, marks, close);
            }
            _ => {}
        }
    }
    (audio, marks, None)
}

/// The agent's side: the caller audio of `user_audio_chunk`s (decoded) until `bytes` came.
async fn caller_audio(el: &mut Pipe, bytes: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < bytes {
        let Some(Ok(Message::Text(t))) = el.next().await else {
            panic!("agent socket ended")
        };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        if let Some(chunk) = v["user_audio_chunk"].as_str() {
            got.extend(STANDARD.decode(chunk).unwrap());
        }
    }
    got
}

fn limits() -> Limits {
    Limits {
        max_buffered_bytes: 1 << 20,
    }
}

#[tokio::test(start_paused = true)]
async fn an_echo_call_end_to_end_over_pipes() {
    let (server, mut twilio) = pipe(1 << 16).await;
    let agent = agent(AgentMode::Echo(Duration::from_millis(200)), None);
    let host = host(None);
    let cfg = RelayConfig::with_agent(agent.mode);
    let call = run(
        server,
        &agent,
        &host,
        cfg,
        None,
        limits(),
        CallStops::new().register(),
    );
    let caller = async {
        twilio.send(start()).await.unwrap();
        let mut sent = Vec::new();
        for i in 0..10u8 {
            let frame = [i; 160];
            sent.extend_from_slice(&frame);
            twilio.send(media(&frame)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        twilio.send(stop()).await.unwrap();
        (sent, listen(&mut twilio).await)
    };
    let (summary, (sent, (heard, marks, close))) = tokio::join!(call, caller);
    assert_eq!(heard, sent, "the echo, byte for byte");
    assert!(marks >= 1);
    assert_eq!(close, Some((1000, "stream stopped".into())));
    assert_eq!((summary.frames_in, summary.frames_out), (10, 10));
    assert_eq!(summary.outcome, Outcome::normal);
    let text = host.metrics.render();
    assert!(
        text.contains("media_frames_total{direction=\"inbound\"} 10"),
        "{text}"
    );
    assert!(
        text.contains("media_events_total{event=\"media\"} 10"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_remote_agent_call_both_ways_and_the_agent_ending_it() {
    let (server, mut twilio) = pipe(1 << 16).await;
    let (agent_side, mut el) = pipe(1 << 16).await;
    // The loop is the agent's client: its end masks, ours is the agent server.
    let agent = agent(AgentMode::Remote { binary: false }, Some(agent_side));
    let host = host(None);
    let cfg = RelayConfig::with_agent(agent.mode);
    let call = run(
        server,
        &agent,
        &host,
        cfg,
        None,
        limits(),
        CallStops::new().register(),
    );
    let fake_agent = async {
        let Some(Ok(Message::Text(init))) = el.next().await else {
            panic!("no initiation")
        };
        let init: Value = serde_json::from_str(init.as_str()).unwrap();
        assert_eq!(init["dynamic_variables"]["lang"], "en");
        el.send(text(json!({"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{"agent_output_audio_format":"ulaw_8000","user_input_audio_format":"ulaw_8000"}}))).await.unwrap();
        let got = caller_audio(&mut el, 3 * 160).await;
        el.send(text(json!({"type":"audio","audio_event":{"audio_base_64":STANDARD.encode([7u8; 480]),"event_id":1}}))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let done = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "".into(),
        };
        el.close(Some(done)).await.unwrap();
        got
    };
    let caller = async {
        twilio.send(start()).await.unwrap();
        for i in 1..=3u8 {
            twilio.send(media(&[i; 160])).await.unwrap();
        }
        listen(&mut twilio).await
    };
    let (summary, got, (heard, _, close)) = tokio::join!(call, fake_agent, caller);
    assert_eq!(
        got,
        [[1u8; 160], [2; 160], [3; 160]].concat(),
        "held, then relayed"
    );
    assert_eq!(heard, vec![7; 480]);
    assert_eq!(close, Some((1000, "agent ended".into())));
    assert_eq!(summary.outcome, Outcome::normal);
}

#[tokio::test(start_paused = true)]
async fn a_refused_claim_closes_with_its_code() {
    let (server, mut twilio) = pipe(1 << 16).await;
    let agent = agent(AgentMode::Echo(Duration::from_millis(20)), None);
    let host = host(Some(Ending::of(EndReason::Duplicate)));
    let cfg = RelayConfig::with_agent(agent.mode);
    // Claims are made for bound streams only.
    let call = run(
        server,
        &agent,
        &host,
        cfg,
        Some("CA1".into()),
        limits(),
        CallStops::new().register(),
    );
    let caller = async {
        twilio.send(start()).await.unwrap();
        listen(&mut twilio).await
    };
    let (summary, (_, _, close)) = tokio::join!(call, caller);
    assert_eq!(close, Some((1008, "duplicate stream for call".into())));
    assert_eq!(summary.outcome, Outcome::duplicate);
}

#[tokio::test(start_paused = true)]
async fn a_twilio_that_stops_reading_is_closed_after_the_write_budget() {
    // A tiny pipe: once it is full, every write would block.
    let (server, mut twilio) = pipe(4096).await;
    let agent = agent(AgentMode::Echo(Duration::from_millis(20)), None);
    let host = host(None);
    let cfg = RelayConfig::with_agent(agent.mode);
    let small = Limits {
        max_buffered_bytes: 2_000,
    };
    let started = Instant::now();
    let call = async {
        let summary = run(
            server,
            &agent,
            &host,
            cfg,
            None,
            small,
            CallStops::new().register(),
        )
        .await;
        (summary, started.elapsed())
    };
    let caller = async {
        twilio.send(start()).await.unwrap();
        // Ten seconds of audio in real time, never reading a byte of the echo.
        for _ in 0..500 {
            if twilio.send(media(&[1; 160])).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let ((summary, took), ()) = tokio::join!(call, caller);
    assert_eq!(
        (summary.outcome, summary.close_code, summary.reason),
        (Outcome::backpressure, Some(1013), "peer too slow")
    );
    assert!(
        summary.dropped > 0,
        "audio beyond the limit was dropped, not queued"
    );
    // The echo starts 20 ms in; the socket fills within a second; 5 s over budget; close.
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn drain_closes_a_live_call_with_1001() {
    let (server, mut twilio) = pipe(1 << 16).await;
    let agent = agent(AgentMode::None, None);
    let host = host(None);
    let stops = CallStops::new();
    let cfg = RelayConfig::with_agent(agent.mode);
    let call = run(server, &agent, &host, cfg, None, limits(), stops.register());
    let caller = async {
        twilio.send(start()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        stops.close();
        listen(&mut twilio).await
    };
    let (summary, (_, _, close)) = tokio::join!(call, caller);
    assert_eq!(close, Some((1001, "server shutting down".into())));
    assert_eq!(summary.outcome, Outcome::drained);
}

#[tokio::test(start_paused = true)]
async fn a_drain_ends_a_live_call_gracefully_before_its_deadline_not_with_1001() {
    let (server, mut twilio) = pipe(1 << 16).await;
    let agent = agent(AgentMode::Echo(Duration::from_millis(200)), None);
    let host = host(None);
    let stops = CallStops::new();
    let cfg = RelayConfig::with_agent(agent.mode);
    let call = run(server, &agent, &host, cfg, None, limits(), stops.register());
    let started = Instant::now();
    let caller = async {
        twilio.send(start()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        stops.drain(Instant::now() + Duration::from_secs(10));
        let heard = listen(&mut twilio).await;
        (heard, started.elapsed())
    };
    let (summary, ((_, _, close_frame), took)) = tokio::join!(call, caller);
    assert_eq!(close_frame, Some((1000, "server draining".into())));
    assert_eq!(summary.outcome, Outcome::drained);
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_secs(11),
        "ended halfway to the deadline or later, before it: {took:?}"
    );
}

mod agent;
mod guards;
