//! The agent relay end to end: the real `media-ws` binary between a simulated Twilio caller
//! and the built-in echo agent or a fake ElevenLabs server on loopback — what needs the
//! process: the real client (signed URLs, retries), the registry, concurrency, the logs.
//! The call loop's own behaviour with an agent is in `src/call/tests/agent.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use media_test_support::media_ws as support;

use std::time::Duration;

use serde_json::json;
use support::fake_el::{Behaviour, FakeEl};
use support::*;

const NO_GAP: Duration = Duration::ZERO;
const REAL_TIME: Duration = Duration::from_millis(20);

async fn server_with(fake: &FakeEl, extra: &[(&str, &str)]) -> Server {
    let url = fake.ws_url();
    let mut env = vec![
        ("AGENT", "elevenlabs"),
        ("ALLOW_UNAUTHENTICATED", "true"),
        ("ELEVENLABS_WS_URL", url.as_str()),
    ];
    env.extend_from_slice(extra);
    Server::start(&env).await
}

async fn caller(s: &Server, params: serde_json::Value) -> Caller {
    let c = Caller::new(s.connect("/rtm/voice", &[]).await.unwrap());
    c.send(connected());
    c.send(start_with(CALL_SID, params));
    c
}

#[tokio::test]
async fn echo_agent_plays_the_callers_audio_back_sample_exact() {
    let s = Server::start(&[("AGENT", "echo"), ("ECHO_DELAY_MS", "50")]).await;
    let c = caller(&s, json!({})).await;
    let audio = tone(1, 50);
    let seq = c.play(&audio, 2, REAL_TIME).await;
    let log = c
        .wait("all audio back", |l| l.audio.len() >= audio.len())
        .await;
    assert_eq!(log.audio, audio, "the echo is byte-exact");
    assert_eq!(log.malformed, 0);
    assert!(
        log.items.iter().any(|i| i.starts_with("mark:")),
        "marks follow the audio"
    );
    c.send(stop(seq));
    let log = c.wait("close", |l| l.close.is_some()).await;
    assert_eq!(log.close, Some((1000, "stream stopped".into())));
    assert_eq!(
        s.metric("media_frames_total{direction=\"outbound\"}").await,
        50.0
    );
}

#[tokio::test]
async fn ulaw_passes_through_both_ways_and_dynamic_variables_reach_the_agent() {
    let fake = FakeEl::start(Behaviour::default()).await;
    let s = server_with(&fake, &[]).await;
    let c = caller(
        &s,
        json!({"first_name":"Ada","account":"42","token":"never-forwarded"}),
    )
    .await;
    let audio = tone(2, 25);
    let seq = c.play(&audio, 2, NO_GAP).await;
    fake.wait("caller audio", |cs| {
        cs.len() == 1 && cs[0].audio.len() >= audio.len()
    })
    .await;
    let conv = fake.conversation(0);
    assert_eq!(
        conv.audio, audio,
        "ulaw_8000 input is Twilio's bytes untouched"
    );
    let init = conv.init.expect("initiation data sent");
    assert_eq!(
        init["dynamic_variables"],
        json!({"first_name":"Ada","account":"42"})
    );
    let log = c.wait("echo back", |l| l.audio.len() >= audio.len()).await;
    assert_eq!(
        log.audio, audio,
        "ulaw_8000 output is the agent's bytes untouched"
    );
    c.send(stop(seq));
    c.wait("close", |l| l.close.is_some()).await;
    fake.wait("agent closed by the bridge", |cs| cs[0].ended)
        .await;
    assert_eq!(fake.conversation(0).close_code, Some(1000));
}

#[tokio::test]
async fn private_agents_connect_through_a_signed_url() {
    let fake = FakeEl::start(Behaviour {
        api_key: Some("xi-test-key"),
        ..Behaviour::default()
    })
    .await;
    let base = fake.api_base();
    let s = Server::start(&[
        ("AGENT", "elevenlabs"),
        ("ALLOW_UNAUTHENTICATED", "true"),
        ("ELEVENLABS_AGENT_ID", "agent_test"),
        ("ELEVENLABS_API_KEY", "xi-test-key"),
        ("ELEVENLABS_API_BASE", base.as_str()),
    ])
    .await;
    let _c = caller(&s, json!({})).await;
    fake.wait("connected", |cs| cs.len() == 1 && cs[0].init.is_some())
        .await;
    assert_eq!(fake.signed_url_requests(), 1);
    assert!(fake
        .conversation(0)
        .query
        .contains("conversation_signature=sig123"));
    assert_eq!(
        fake.conversation(0).xi_api_key,
        None,
        "a signed URL needs no key on the socket"
    );
}

#[tokio::test]
async fn unreachable_agent_ends_the_stream_normally_after_bounded_retries() {
    // A port with nothing listening.
    let refused = refused_port();
    let url = format!("ws://127.0.0.1:{}/v1/convai/conversation", refused.port);
    let s = Server::start(&[
        ("AGENT", "elevenlabs"),
        ("ALLOW_UNAUTHENTICATED", "true"),
        ("ELEVENLABS_WS_URL", url.as_str()),
        ("ELEVENLABS_CONNECT_RETRIES", "2"),
    ])
    .await;
    let started = std::time::Instant::now();
    let c = caller(&s, json!({})).await;
    let log = c.wait("close", |l| l.close.is_some()).await;
    assert_eq!(log.close, Some((1000, "agent unavailable".into())));
    // Two backoffs (250 ms, 500 ms) happened before giving up.
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    s.wait_log("\"outcome\":\"agent_error\"").await;
    assert!(s.logs().matches("agent connect failed, retrying").count() == 2);

    // An agent that accepts TCP but never answers the handshake: the connect timeout holds.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "ws://{}/v1/convai/conversation",
        silent.local_addr().unwrap()
    );
    let s = Server::start(&[
        ("AGENT", "elevenlabs"),
        ("ALLOW_UNAUTHENTICATED", "true"),
        ("ELEVENLABS_WS_URL", url.as_str()),
        ("ELEVENLABS_CONNECT_RETRIES", "0"),
        ("ELEVENLABS_CONNECT_TIMEOUT_MS", "300"),
    ])
    .await;
    let c = caller(&s, json!({})).await;
    let log = c.wait("close", |l| l.close.is_some()).await;
    assert_eq!(log.close, Some((1000, "agent unavailable".into())));

    // With the shipped per-attempt timeout (5 s) and retries (2), three hung attempts would
    // leave the caller in silence for over 15 s; the overall deadline ends it at 5 s.
    let s = Server::start(&[
        ("AGENT", "elevenlabs"),
        ("ALLOW_UNAUTHENTICATED", "true"),
        ("ELEVENLABS_WS_URL", url.as_str()),
    ])
    .await;
    let c = caller(&s, json!({})).await;
    let started = std::time::Instant::now();
    let log = c.wait("close", |l| l.close.is_some()).await;
    assert_eq!(log.close, Some((1000, "agent unavailable".into())));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(4500) && waited < Duration::from_secs(7),
        "{waited:?}"
    );
    s.wait_log("\"outcome\":\"agent_error\"").await;
    drop(silent);
}

#[tokio::test]
async fn a_second_stream_for_the_same_call_is_refused_and_the_first_keeps_running() {
    let fake = FakeEl::start(Behaviour::default()).await;
    let url = fake.ws_url();
    let s = Server::start(&[
        ("AGENT", "elevenlabs"),
        ("MEDIA_SHARED_SECRET", "relay-secret"),
        ("ELEVENLABS_WS_URL", url.as_str()),
    ])
    .await;
    // Two tokens, both bound to the call (only a bound stream claims its CallSid).
    let bound = || {
        let issuer = media_orchestrator::auth::TokenIssuer::new(
            &media_orchestrator::secret::Secret::new("relay-secret".into()),
            media_orchestrator::auth::Clock::System,
        );
        let token = issuer
            .mint(Some(CALL_SID), Duration::from_secs(60))
            .unwrap();
        format!("/rtm/voice/jwt/{}", token.token.expose())
    };
    let open = |path: String| {
        let s = &s;
        async move {
            let c = Caller::new(s.connect(&path, &[]).await.unwrap());
            c.send(connected());
            c.send(start_with(CALL_SID, json!({})));
            c
        }
    };
    let first = open(bound()).await;
    fake.wait("first", |cs| cs.len() == 1 && cs[0].init.is_some())
        .await;
    let second = open(bound()).await;
    let log = second.wait("close", |l| l.close.is_some()).await;
    assert_eq!(log.close, Some((1008, "duplicate stream for call".into())));
    assert_eq!(
        s.metric("media_calls_total{outcome=\"duplicate\"}").await,
        1.0
    );
    let audio = tone(7, 10);
    first.play(&audio, 2, NO_GAP).await;
    let log = first
        .wait("first still works", |l| l.audio.len() >= audio.len())
        .await;
    assert_eq!(log.audio, audio);
    assert_eq!(fake.conversations().len(), 1);
}

#[tokio::test]
async fn fifty_concurrent_calls_hear_only_their_own_agent() {
    let fake = FakeEl::start(Behaviour::default()).await;
    let s = server_with(&fake, &[]).await;
    let mut calls = Vec::new();
    for i in 0..50u8 {
        let sid = format!("CA{:032}", i);
        let c = Caller::new(s.connect("/rtm/voice", &[]).await.unwrap());
        c.send(connected());
        c.send(start_with(&sid, json!({})));
        calls.push((c, tone(i, 10)));
    }
    for (c, audio) in &calls {
        c.play(audio, 2, NO_GAP).await;
    }
    for (i, (c, audio)) in calls.iter().enumerate() {
        let log = c.wait("own echo", |l| l.audio.len() >= audio.len()).await;
        assert_eq!(&log.audio, audio, "call {i} heard someone else");
    }
}

#[tokio::test]
async fn agent_traffic_never_reaches_the_log() {
    let fake = FakeEl::start(Behaviour::default()).await;
    let url = fake.ws_url();
    let s = Server::start(&[
        ("AGENT", "elevenlabs"),
        ("ALLOW_UNAUTHENTICATED", "true"),
        ("ELEVENLABS_WS_URL", url.as_str()),
        ("ELEVENLABS_API_KEY", "XIKEYMARKER"),
        ("RUST_LOG", "trace"),
    ])
    .await;
    let c = caller(
        &s,
        json!({"patient_name":"DYNVALUEMARKER","phone":"+15559876543"}),
    )
    .await;
    fake.wait("connected", |cs| cs.len() == 1 && cs[0].init.is_some())
        .await;
    assert_eq!(
        fake.conversation(0).xi_api_key.as_deref(),
        Some("XIKEYMARKER")
    );
    let marker_audio = b"AUDIOMARKERAUDIOMARKER".repeat(8);
    c.play(&marker_audio, 2, NO_GAP).await;
    fake.send_json(0, json!({"type":"agent_response","agent_response_event":{"agent_response":"TRANSCRIPTMARKER","event_id":2}}));
    fake.send_json(0, json!({"type":"user_transcript","user_transcription_event":{"user_transcript":"USERSAIDMARKER","event_id":3}}));
    c.wait("echo", |l| l.audio.len() >= marker_audio.len())
        .await;
    s.wait_log("agent connected").await;
    let logs = s.logs();
    assert!(
        logs.contains("patient_name"),
        "variable names may be logged"
    );
    for marker in [
        "DYNVALUEMARKER",
        "5559876543",
        "XIKEYMARKER",
        "AUDIOMARKER",
        "QVVESU9NQVJLRVJ",
        "TRANSCRIPTMARKER",
        "USERSAIDMARKER",
    ] {
        assert!(!logs.contains(marker), "log leaked {marker}");
    }
}
