//! The fleet-wide call registry (`CALL_REGISTRY_TABLE`) against moto's DynamoDB, with two real
//! `media-ws` processes standing in for two tasks behind the ALB: a token opens one stream,
//! once, on any task; a live CallSid has one stream across both; an unreachable table refuses
//! new calls with 503 and leaves live calls alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use media_test_support::lambda as lambda_support;
use media_test_support::media_ws as support;
use media_test_support::twilio_rest;

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use lambda_support::Moto;
use media_orchestrator::auth::{Clock, TokenIssuer};
use media_orchestrator::secret::Secret;
use serde_json::json;
use support::fake_el::{Behaviour, FakeEl};
use support::{
    connected, echo_marks_until_close, expect_close, media, start, stop, tone, Caller, Server,
    CALL_SID, SILENCE_B64,
};
use twilio_rest::FakeTwilioRest;

const T: Duration = Duration::from_secs(10);
const SECRET: &str = "registry-test-secret";
const TABLE: &str = "media-calls";

fn mint(call_sid: Option<&str>) -> String {
    TokenIssuer::new(&Secret::new(SECRET.into()), Clock::System)
        .mint(call_sid, Duration::from_secs(300))
        .unwrap()
        .token
        .expose()
        .clone()
}

/// A token bound to no call: the shortest-lived kind the verifier accepts.
fn mint_unbound() -> String {
    TokenIssuer::new(&Secret::new(SECRET.into()), Clock::System)
        .mint(None, Duration::from_secs(60))
        .unwrap()
        .token
        .expose()
        .clone()
}

fn path(token: &str) -> String {
    format!("/rtm/voice/jwt/{token}")
}

/// Moto with the registry table, as infra/media-ws.yaml creates it.
async fn moto_with_table() -> Moto {
    let moto = Moto::start().await;
    moto.create_table(TABLE, "pk", "expires_at").await;
    moto
}

/// A media-ws "task" using the registry (echo agent, JWT auth).
async fn task(moto: &Moto, extra: &[(&str, &str)]) -> Server {
    let mut env: Vec<(String, String)> = vec![
        ("AGENT".into(), "echo".into()),
        ("ECHO_DELAY_MS".into(), "20".into()),
        ("MEDIA_SHARED_SECRET".into(), SECRET.into()),
        ("CALL_REGISTRY_TABLE".into(), TABLE.into()),
    ];
    env.extend(moto.env());
    env.extend(extra.iter().map(|(k, v)| ((*k).into(), (*v).into())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Server::start(&env).await
}

/// A caller whose stream has started and whose echo has come back.
async fn live_call(s: &Server, token: &str) -> Caller {
    let caller = Caller::new(s.connect(&path(token), &[]).await.unwrap());
    caller.send(connected());
    caller.send(start());
    let audio = tone(1, 5);
    caller.play(&audio, 2, Duration::from_millis(20)).await;
    caller.wait("echo", |l| l.audio.len() >= audio.len()).await;
    caller
}

/// Another valid token for the same call on `s`: upgraded, then refused at `start`.
async fn assert_second_stream_refused(s: &Server) {
    let mut second = s.connect(&path(&mint(Some(CALL_SID))), &[]).await.unwrap();
    second.send(connected()).await.unwrap();
    second.send(start()).await.unwrap();
    assert_eq!(
        expect_close(&mut second, T).await,
        (1008, "duplicate stream for call".into())
    );
}

/// Waits until no CallSid claim is left in the table.
async fn wait_released(moto: &Moto) {
    for _ in 0..100 {
        let keys = moto.table_keys(TABLE).await;
        if keys.iter().all(|k| !k.starts_with("call#")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "call claim not released: {:?}",
        moto.table_keys(TABLE).await
    );
}

async fn hang_up(caller: &Caller) {
    caller.send(stop(100));
    let log = caller.wait("close", |l| l.close.is_some()).await;
    assert_eq!(log.close, Some((1000, "stream stopped".into())));
}

#[tokio::test]
async fn a_token_opens_one_stream_once_across_tasks() {
    let moto = moto_with_table().await;
    let a = task(&moto, &[]).await;
    let b = task(&moto, &[]).await;

    let token = mint(Some(CALL_SID));
    let caller = live_call(&a, &token).await;
    // Replayed on the other task while the call lives, and on the same task: refused.
    assert_eq!(b.connect(&path(&token), &[]).await.err(), Some(401));
    assert_eq!(a.connect(&path(&token), &[]).await.err(), Some(401));
    hang_up(&caller).await;
    // ... and after the call ended too: a token is single-use, not single-concurrent.
    assert_eq!(b.connect(&path(&token), &[]).await.err(), Some(401));
    assert_eq!(
        b.metric("media_handshake_rejections_total{reason=\"token_replayed\"}")
            .await,
        2.0
    );
    assert_eq!(
        b.metric("media_call_registry_requests_total{op=\"claim_token\",result=\"taken\"}")
            .await,
        2.0
    );

    // A JWT without jti cannot be single-use: refused when the registry is on.
    let no_jti = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"aud": "media", "exp": Clock::System.now() + 60, "sub": CALL_SID}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(a.connect(&path(&no_jti), &[]).await.err(), Some(401));
    assert_eq!(
        a.metric("media_handshake_rejections_total{reason=\"token_no_jti\"}")
            .await,
        1.0
    );
    // The token item expires with the token (TTL attribute = exp + leeway).
    let keys = moto.table_keys(TABLE).await;
    assert_eq!(
        keys.iter().filter(|k| k.starts_with("jti#")).count(),
        1,
        "{keys:?}"
    );
}

#[tokio::test]
async fn a_live_call_has_one_stream_across_tasks() {
    let moto = moto_with_table().await;
    let a = task(&moto, &[]).await;
    let b = task(&moto, &[]).await;

    let first = live_call(&a, &mint(Some(CALL_SID))).await;
    assert!(moto
        .table_keys(TABLE)
        .await
        .contains(&format!("call#{CALL_SID}")));
    // A second stream for the same call (another valid token) on the other task: upgraded,
    // then refused at `start` with 1008 — the first call goes on.
    assert_second_stream_refused(&b).await;
    let before = first.snapshot().audio.len();
    let audio = tone(2, 5);
    first.play(&audio, 50, Duration::from_millis(20)).await;
    first
        .wait("echo after the refusal", |l| {
            l.audio.len() >= before + audio.len()
        })
        .await;
    hang_up(&first).await;

    // Ended: the claim is released, so the call may stream again (e.g. after a <Redirect>).
    wait_released(&moto).await;
    let again = live_call(&b, &mint(Some(CALL_SID))).await;
    hang_up(&again).await;
}

/// The call ends on task A from our side (its time limit, no REST: the stream is closed so
/// Twilio runs what follows `<Connect>`), and Twilio's `<Redirect>` back to the webhook
/// streams the same CallSid to task B at once: B must take it. B's stream is already open
/// when A's close frame arrives, and its `start` goes out the moment it does, so the claim
/// has to be gone before A closes — not a moment after.
#[tokio::test]
async fn a_redirect_right_after_a_call_ends_streams_again_on_another_task() {
    let moto = moto_with_table().await;
    let a = task(&moto, &[("MAX_CALL_SECONDS", "4")]).await;
    let b = task(&moto, &[]).await;
    let mut first = a.connect(&path(&mint(Some(CALL_SID))), &[]).await.unwrap();
    first.send(connected()).await.unwrap();
    first.send(start()).await.unwrap();
    let mut next = b.connect(&path(&mint(Some(CALL_SID))), &[]).await.unwrap();
    next.send(connected()).await.unwrap();
    // Twilio's side of A: marks echoed as they come; at A's close frame, B's start at once
    // (A's close is left unanswered meanwhile, as a Twilio busy redirecting may leave it).
    let close = echo_marks_until_close(&mut first, T).await;
    next.send(start()).await.unwrap();
    assert_eq!(close, Some((1000, "max duration".into())));
    // B took the call: its echo comes back, and the stream is not refused as a duplicate.
    let audio = tone(2, 5);
    for (i, frame) in audio.chunks(160).enumerate() {
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, frame);
        next.send(media(i as u64 + 2, &b64)).await.unwrap();
    }
    let mut echoed = 0;
    let deadline = Instant::now() + T;
    while echoed < audio.len() {
        let msg =
            tokio::time::timeout_at(deadline.into(), futures_util::StreamExt::next(&mut next))
                .await
                .expect("B's echo in time")
                .unwrap()
                .unwrap();
        match msg {
            tokio_tungstenite::tungstenite::Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v["event"] == "media" {
                    echoed += 160;
                }
            }
            tokio_tungstenite::tungstenite::Message::Close(frame) => {
                panic!("B refused the redirected stream: {frame:?}\n{}", b.logs())
            }
            _ => {}
        }
    }
    assert_eq!(
        b.metric("media_calls_total{outcome=\"duplicate\"}").await,
        0.0
    );
}

/// Leases on the registry's own clock (moto's table, no process, no waiting): a claim or an
/// agent slot is another task's to take exactly when its lease has run out.
#[tokio::test]
async fn claims_and_agent_slots_lapse_when_their_lease_runs_out_on_the_registry_clock() {
    use media_orchestrator::config::CallRegistryConfig;
    use media_orchestrator::metrics::Metrics;
    use media_orchestrator::registry::{slots::Admission, CallRegistry, ClaimError};
    let moto = moto_with_table().await;
    let lease = Duration::from_secs(30);
    let config = CallRegistryConfig {
        table: TABLE.into(),
        lease,
        timeout: Duration::from_secs(5),
    };
    let task_at =
        |t: u64| CallRegistry::with_client(config.clone(), Clock::Fixed(t), moto.dynamodb.clone());
    let metrics = Metrics::new();
    let t0 = 1_900_000_000;

    let a = task_at(t0);
    a.claim_call(CALL_SID, &metrics).await.unwrap();
    // Another task, to the last second of the lease: taken.
    for t in [t0, t0 + 29, t0 + 30] {
        assert_eq!(
            task_at(t).claim_call(CALL_SID, &metrics).await,
            Err(ClaimError::Taken),
            "at t0+{}",
            t - t0
        );
    }
    // The lease has run out (a task killed without releasing): the next task takes it.
    task_at(t0 + 31)
        .claim_call(CALL_SID, &metrics)
        .await
        .unwrap();

    // One agent slot, held by call A for 30 s: call B waits until it lapses.
    let admit = |t: u64, holder: &'static str| {
        let registry = task_at(t);
        let metrics = &metrics;
        async move { registry.admit(holder, 1, lease, metrics).await.unwrap() }
    };
    assert!(matches!(
        admit(t0, "CAaaaa").await,
        Admission::Admitted { in_use: 1, .. }
    ));
    assert_eq!(admit(t0 + 30, "CAbbbb").await, Admission::Full);
    // Call A's retry within its lease keeps its own slot.
    assert!(matches!(
        admit(t0 + 10, "CAaaaa").await,
        Admission::Admitted { .. }
    ));
    assert_eq!(
        admit(t0 + 40, "CAbbbb").await,
        Admission::Full,
        "renewed at t0+10"
    );
    assert!(matches!(
        admit(t0 + 41, "CAbbbb").await,
        Admission::Admitted { in_use: 1, .. }
    ));
}

#[tokio::test]
async fn a_dead_task_releases_its_calls_when_the_lease_runs_out() {
    let moto = moto_with_table().await;
    let b = task(&moto, &[]).await;
    let mut a = task(&moto, &[("CALL_REGISTRY_LEASE_SECONDS", "3")]).await;
    let _first = live_call(&a, &mint(Some(CALL_SID))).await;
    // Renewed while alive (every second with a 3 s lease): still held after two leases.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_second_stream_refused(&b).await;
    // The task dies without releasing anything: its claim is left to lapse. Another task
    // takes it once the last renewal's lease is over — seen on a clock one lease ahead
    // instead of waiting for it (the lapse itself: the test above).
    a.signal("KILL");
    a.wait_exit(T).await;
    let now = Clock::System.now();
    let config = media_orchestrator::config::CallRegistryConfig {
        table: TABLE.into(),
        lease: Duration::from_secs(3),
        timeout: T,
    };
    let metrics = media_orchestrator::metrics::Metrics::new();
    let at = |t| {
        media_orchestrator::registry::CallRegistry::with_client(
            config.clone(),
            Clock::Fixed(t),
            moto.dynamodb.clone(),
        )
    };
    assert!(
        at(now).claim_call(CALL_SID, &metrics).await.is_err(),
        "held to the end of the dead task's lease"
    );
    at(now + 4).claim_call(CALL_SID, &metrics).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_table_refuses_new_calls_and_spares_live_ones() {
    let moto = moto_with_table().await;
    let s = task(&moto, &[("CALL_REGISTRY_TIMEOUT_MS", "1000")]).await;
    let live = live_call(&s, &mint(Some(CALL_SID))).await;

    drop(moto); // DynamoDB goes away.
    let started = Instant::now();
    assert_eq!(
        s.connect(
            &path(&mint(Some("CA11111111111111111111111111111111"))),
            &[]
        )
        .await
        .err(),
        Some(503)
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the timeout"
    );
    s.wait_log("call registry unavailable, refusing new calls")
        .await;
    assert_eq!(
        s.metric("media_handshake_rejections_total{reason=\"registry_unavailable\"}")
            .await,
        1.0
    );

    // The live call is untouched: audio still flows both ways, and it ends normally.
    let before = live.snapshot().audio.len();
    for seq in 60..70 {
        live.send(media(seq, SILENCE_B64));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    live.wait("echo during the outage", |l| l.audio.len() >= before + 1600)
        .await;
    hang_up(&live).await;
    assert_eq!(s.metric("media_calls_total{outcome=\"normal\"}").await, 1.0);
}

#[tokio::test]
async fn a_static_token_stream_cannot_end_transfer_or_preclaim_another_call() {
    let moto = moto_with_table().await;
    let fake = FakeEl::start(Behaviour {
        echo: false,
        ..Behaviour::default()
    })
    .await;
    let rest = FakeTwilioRest::start("127.0.0.1:0", support::ACCOUNT_SID, "registry-auth-token")
        .await
        .unwrap();
    let (ws_url, rest_base) = (fake.ws_url(), rest.base_url());
    let control = [
        ("AGENT", "elevenlabs"),
        ("ELEVENLABS_WS_URL", ws_url.as_str()),
        ("TWILIO_ACCOUNT_SID", support::ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", "registry-auth-token"),
        ("TWILIO_API_BASE", rest_base.as_str()),
        ("TRANSFER_ALLOWLIST", "+15557770000"),
    ];
    // Task a still takes the legacy static token; task b takes the Lambda's bound JWTs.
    let mut legacy: Vec<(String, String)> = moto.env();
    legacy.push(("CALL_REGISTRY_TABLE".into(), TABLE.into()));
    legacy.push((
        "MEDIA_AUTH_TOKEN".into(),
        "static-token-for-legacy-clients".into(),
    ));
    legacy.extend(control.iter().map(|(k, v)| ((*k).into(), (*v).into())));
    let legacy: Vec<(&str, &str)> = legacy
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let a = Server::start(&legacy).await;
    let b = task(&moto, &control).await;

    // Whoever holds the static token opens a stream naming a real caller's CallSid.
    let intruder = Caller::new(
        a.connect("/rtm/voice/jwt/static-token-for-legacy-clients", &[])
            .await
            .unwrap(),
    );
    intruder.send(connected());
    intruder.send(start());
    fake.wait("intruder's conversation", |c| {
        c.first().is_some_and(|c| c.init.is_some())
    })
    .await;
    a.wait_log("stream token not bound to its call").await;
    // No claim was made: the real call's stream on the other task is not a "duplicate".
    assert!(
        !moto
            .table_keys(TABLE)
            .await
            .iter()
            .any(|k| k.starts_with("call#")),
        "an unbound stream claims nothing"
    );
    let real = Caller::new(b.connect(&path(&mint(Some(CALL_SID))), &[]).await.unwrap());
    real.send(connected());
    real.send(start());
    fake.wait("real conversation", |c| c.len() == 2 && c[1].init.is_some())
        .await;
    assert_eq!(
        moto.table_keys(TABLE)
            .await
            .iter()
            .filter(|k| k.starts_with("call#"))
            .count(),
        1,
        "the bound stream holds the call"
    );

    // The intruder's agent tries a transfer: refused in words it can say.
    fake.send_json(
        0,
        json!({"type":"client_tool_call","client_tool_call":{"tool_name":"transfer_to_number","tool_call_id":"t1","parameters":{"phone_number":"+15557770000"},"event_id":3}}),
    );
    fake.wait("tool result", |c| {
        c[0].messages
            .iter()
            .any(|(_, m)| m["type"] == "client_tool_result")
    })
    .await;
    let result = fake
        .conversation(0)
        .messages
        .iter()
        .find(|(_, m)| m["type"] == "client_tool_result")
        .unwrap()
        .1
        .clone();
    assert_eq!(result["is_error"], true);
    assert_eq!(
        result["result"],
        "Transfers are not available on this call."
    );
    // ... then says goodbye and ends: the stream closes after the goodbye, nothing is hung up.
    fake.send_audio(0, &[0x55; 8_000], 1);
    fake.close(0, 1000);
    let log = intruder.wait("close", |l| l.close.is_some()).await;
    assert_eq!(log.close, Some((1000, "agent ended".into())));
    assert_eq!(log.audio.len(), 8_000, "the goodbye played");
    assert!(
        rest.requests().is_empty(),
        "{:?}",
        rest.requests()
            .iter()
            .map(|r| r.describe())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        a.metric("media_call_control_events_total{event=\"unbound_stream\"}")
            .await,
        1.0
    );

    // The real call was never touched and still ends as its own agent says.
    let audio = tone(3, 5);
    real.play(&audio, 2, Duration::from_millis(20)).await;
    fake.wait("real call still streams", |c| {
        c[1].audio.len() >= audio.len()
    })
    .await;
    hang_up(&real).await;
    assert!(rest.requests().is_empty());

    // A sub-less JWT (60 s at most) is no better than the static token.
    let unbound = Caller::new(b.connect(&path(&mint_unbound()), &[]).await.unwrap());
    unbound.send(connected());
    unbound.send(start());
    fake.wait("unbound conversation", |c| {
        c.len() == 3 && c[2].init.is_some()
    })
    .await;
    assert!(
        !moto
            .table_keys(TABLE)
            .await
            .iter()
            .any(|k| k.starts_with("call#")),
        "no claim for an unbound stream"
    );
    hang_up(&unbound).await;
    assert_eq!(
        b.metric("media_call_control_events_total{event=\"unbound_stream\"}")
            .await,
        1.0
    );
}

/// A TCP proxy in front of moto whose first connection delivers requests but holds their
/// answers back past the SDK's attempt timeout (a DynamoDB that wrote, then answered late);
/// later connections pass straight through. Returns the endpoint to give the SDK.
async fn late_first_answer(moto: &Moto, hold: Duration) -> String {
    let upstream = moto.endpoint.trim_start_matches("http://").to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let late = std::mem::replace(&mut first, false);
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut client_r, mut client_w) = client.into_split();
                let (mut server_r, mut server_w) = server.into_split();
                let up = tokio::io::copy(&mut client_r, &mut server_w);
                let down = async {
                    if late {
                        tokio::time::sleep(hold).await;
                    }
                    tokio::io::copy(&mut server_r, &mut client_w).await
                };
                let _ = tokio::join!(up, down);
            });
        }
    });
    endpoint
}

#[tokio::test]
async fn a_token_claim_answered_late_is_not_mistaken_for_its_own_replay() {
    let moto = moto_with_table().await;
    // Attempts time out at half of 3 s; the first answer comes after 2 s, the retry's at once.
    let endpoint = late_first_answer(&moto, Duration::from_secs(2)).await;
    let s = task(
        &moto,
        &[
            ("CALL_REGISTRY_TIMEOUT_MS", "3000"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ],
    )
    .await;
    let caller = live_call(&s, &mint(Some(CALL_SID))).await;
    // The SDK did retry (the first attempt's write had landed), and the retry was let through.
    let keys = moto.table_keys(TABLE).await;
    assert_eq!(keys.iter().filter(|k| k.starts_with("jti#")).count(), 1);
    assert_eq!(
        s.metric("media_handshake_rejections_total{reason=\"token_replayed\"}")
            .await,
        0.0
    );
    hang_up(&caller).await;
}

/// Handshake latency the registry adds (one conditional PutItem), measured against moto on
/// loopback; see BENCHMARKS.md. `cargo test --release --test call_registry -- --ignored
/// --nocapture handshake_latency`
#[tokio::test]
#[ignore = "benchmark: run by hand, figures in BENCHMARKS.md"]
async fn handshake_latency_with_and_without_the_registry() {
    let moto = moto_with_table().await;
    let with = task(&moto, &[("RUST_LOG", "info")]).await;
    let without = Server::start(&[
        ("AGENT", "echo"),
        ("MEDIA_SHARED_SECRET", SECRET),
        ("RUST_LOG", "info"),
    ])
    .await;
    for (name, server) in [("without registry", &without), ("with registry", &with)] {
        let mut times = Vec::new();
        for _ in 0..200 {
            let token = mint(Some(CALL_SID));
            let t0 = Instant::now();
            let ws = server.connect(&path(&token), &[]).await.unwrap();
            times.push(t0.elapsed());
            drop(ws);
        }
        times.sort();
        let pct = |p: usize| times[times.len() * p / 100].as_secs_f64() * 1000.0;
        println!(
            "{name}: upgrade p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms (200 handshakes)",
            pct(50),
            pct(90),
            pct(99)
        );
    }
}
