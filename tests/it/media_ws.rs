//! `media-ws` end to end: the real binary on a loopback port, driven over real WebSockets —
//! what needs a process: HTTP routes, auth at the upgrade, limits, exit codes, SIGTERM, logs,
//! ECS and EMF. The call loop's protocol and guards are component tests (src/call/tests/).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use media_test_support::media_ws as support;

use std::time::Duration;

use base64::Engine as _;
use futures_util::SinkExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(10);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn root_health_metrics_and_404() {
    let s = Server::start(&[]).await;
    let (status, body) = s.get("/").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["service"], "media");
    assert_eq!(v["wsPath"], "/rtm/voice");
    let time = v["time"].as_str().unwrap();
    assert!(time.ends_with('Z') && time.contains('T'), "{time}");
    humantime::parse_rfc3339(time).unwrap();

    let (status, body) = s.get("/health").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["ok"].clone(), v["service"].clone()),
        (json!(true), json!("media"))
    );

    let (status, body) = s.get("/nope").await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"],
        "not_found"
    );

    let (status, _) = http_request(s.addr, "POST", "/health", &[]).await;
    assert_eq!(status, 405);

    // The stream path without an upgrade, and an upgrade elsewhere.
    let (status, _) = s.get("/rtm/voice").await;
    assert_eq!(status, 426);
    assert_eq!(s.connect("/elsewhere", &[]).await.err(), Some(404));

    let (status, body) = s.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("media_active_calls 0"), "{body}");
}

#[tokio::test]
async fn full_call_is_counted_in_metrics() {
    let s = Server::start(&[]).await;
    let mut ws = s.connect("/rtm/voice", &[]).await.unwrap();
    play_call(&mut ws, 100).await;
    assert_eq!(
        expect_close(&mut ws, T).await,
        (1000, "stream stopped".into())
    );
    s.wait_log("call closed").await;
    assert_eq!(
        s.metric("media_frames_total{direction=\"inbound\"}").await,
        100.0
    );
    assert_eq!(
        s.metric("media_audio_bytes_total{direction=\"inbound\"}")
            .await,
        16000.0
    );
    assert_eq!(s.metric("media_calls_total{outcome=\"normal\"}").await, 1.0);
    assert_eq!(s.metric("media_events_total{event=\"start\"}").await, 1.0);
    assert_eq!(s.metric("media_active_calls").await, 0.0);
}

#[tokio::test]
async fn jwt_auth_every_source_and_every_refusal() {
    let s = Server::start(&[("MEDIA_SHARED_SECRET", "new-secret,old-secret")]).await;
    let good = jwt(
        "new-secret",
        json!({"aud":"media","exp":now()+60,"iat":now()}),
    );

    // Sources: path, query, header.
    assert!(s
        .connect(&format!("/rtm/voice/jwt/{good}"), &[])
        .await
        .is_ok());
    assert!(s
        .connect(&format!("/rtm/voice?token={good}"), &[])
        .await
        .is_ok());
    assert!(s
        .connect("/rtm/voice", &[("x-media-auth", &good)])
        .await
        .is_ok());
    // Rotation: a token signed with the second secret still verifies.
    let rotated = jwt("old-secret", json!({"aud":"media","exp":now()+60}));
    assert!(s
        .connect(&format!("/rtm/voice/jwt/{rotated}"), &[])
        .await
        .is_ok());

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let alg_none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(json!({"aud":"media","exp":now()+60}).to_string())
    );
    let refused = [
        ("missing", String::new(), "token_missing"),
        (
            "expired",
            jwt("new-secret", json!({"aud":"media","exp":now()-120})),
            "token_expired",
        ),
        (
            "wrong aud",
            jwt("new-secret", json!({"aud":"other","exp":now()+60})),
            "token_audience",
        ),
        (
            "wrong secret",
            jwt("removed", json!({"aud":"media","exp":now()+60})),
            "token_signature",
        ),
        ("alg none", alg_none, "token_algorithm"),
        (
            "future iat",
            jwt(
                "new-secret",
                json!({"aud":"media","exp":now()+600,"iat":now()+300}),
            ),
            "token_not_yet_valid",
        ),
    ];
    for (what, token, reason) in refused {
        let path = if token.is_empty() {
            "/rtm/voice".to_string()
        } else {
            format!("/rtm/voice/jwt/{token}")
        };
        assert_eq!(s.connect(&path, &[]).await.err(), Some(401), "{what}");
        let metric = format!("media_handshake_rejections_total{{reason=\"{reason}\"}}");
        assert_eq!(s.metric(&metric).await, 1.0, "{what}");
    }
}

#[tokio::test]
async fn jwt_sub_must_match_call_sid() {
    let s = Server::start(&[("MEDIA_SHARED_SECRET", "k")]).await;
    let bound = jwt("k", json!({"aud":"media","exp":now()+60,"sub":CALL_SID}));
    let mut ok = s
        .connect(&format!("/rtm/voice/jwt/{bound}"), &[])
        .await
        .unwrap();
    play_call(&mut ok, 3).await;
    assert_eq!(expect_close(&mut ok, T).await.0, 1000);

    let mut other = s
        .connect(&format!("/rtm/voice/jwt/{bound}"), &[])
        .await
        .unwrap();
    other.send(connected()).await.unwrap();
    other
        .send(start_with("CA00000000000000000000000000000000", json!({})))
        .await
        .unwrap();
    assert_eq!(
        expect_close(&mut other, T).await,
        (1008, "call sid mismatch".into())
    );
    s.wait_log("\"outcome\":\"auth\"").await;
    assert_eq!(s.metric("media_calls_total{outcome=\"auth\"}").await, 1.0);
}

#[tokio::test]
async fn static_token_good_and_bad() {
    let s = Server::start(&[("MEDIA_AUTH_TOKEN", "static-token-1")]).await;
    assert!(s
        .connect("/rtm/voice/jwt/static-token-1", &[])
        .await
        .is_ok());
    assert!(s
        .connect("/rtm/voice", &[("x-media-auth", "static-token-1")])
        .await
        .is_ok());
    assert_eq!(
        s.connect("/rtm/voice/jwt/static-token-2", &[]).await.err(),
        Some(401)
    );
    assert_eq!(s.connect("/rtm/voice", &[]).await.err(), Some(401));
    assert_eq!(
        s.metric("media_handshake_rejections_total{reason=\"token_static_mismatch\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn oversize_websocket_message_is_refused_by_the_framing_layer() {
    let s = Server::start(&[("MAX_MEDIA_PAYLOAD_BYTES", "160")]).await;
    let mut ws = s.connect("/rtm/voice", &[]).await.unwrap();
    ws.send(connected()).await.unwrap();
    let huge = "x".repeat(64 * 1024);
    ws.send(Message::text(huge)).await.unwrap();
    assert_eq!(expect_close(&mut ws, T).await.0, 1009);
}

#[tokio::test]
async fn max_calls_refuses_the_next_handshake() {
    let s = Server::start(&[("MAX_CALLS", "1")]).await;
    let mut first = s.connect("/rtm/voice", &[]).await.unwrap();
    first.send(connected()).await.unwrap();
    assert_eq!(s.connect("/rtm/voice", &[]).await.err(), Some(503));
    assert_eq!(
        s.metric("media_handshake_rejections_total{reason=\"capacity\"}")
            .await,
        1.0
    );
    play_call(&mut first, 1).await;
    expect_close(&mut first, T).await;
    // The slot frees once the call has ended.
    for _ in 0..100 {
        if s.metric("media_active_calls").await == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.connect("/rtm/voice", &[]).await.is_ok());
}

#[tokio::test]
async fn a_client_that_never_sends_its_request_is_dropped() {
    let s = Server::start(&[("HANDSHAKE_TIMEOUT_MS", "300")]).await;
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(b"GET /rtm/voice HTTP/1.1\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("connection should be dropped by the server")
        .unwrap_or(0);
    // hyper answers 408 or just closes; either way no upgrade happens.
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || head.starts_with("HTTP/1.1 408"), "{head}");
}

#[tokio::test]
async fn sigterm_drains_live_calls_then_exits_zero() {
    let mut s = Server::start(&[("DRAIN_TIMEOUT_MS", "10000")]).await;
    let mut ws = s.connect("/rtm/voice", &[]).await.unwrap();
    ws.send(connected()).await.unwrap();
    ws.send(start()).await.unwrap();
    s.wait_log("stream started").await;
    s.signal("TERM");
    s.wait_log("draining").await;
    let (status, body) = s.get("/health").await;
    assert_eq!(status, 503);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["ok"], false);
    assert_eq!(s.connect("/rtm/voice", &[]).await.err(), Some(503));
    // The live call keeps working and ends on its own.
    ws.send(media(2, SILENCE_B64)).await.unwrap();
    ws.send(stop(3)).await.unwrap();
    assert_eq!(expect_close(&mut ws, T).await.0, 1000);
    assert_eq!(s.wait_exit(T).await, Some(0));
    let logs = s.logs();
    assert!(logs.contains("\"drained_cleanly\":true"), "{logs}");
    assert!(!logs.contains("panicked"));
}

#[tokio::test]
async fn sigterm_ends_a_live_call_gracefully_before_the_deadline_not_with_1001() {
    // Twilio never echoes the final mark here: the call still ends with 1000 at 7/8 of the
    // drain budget, and the process exits with everything drained.
    let mut s = Server::start(&[("DRAIN_TIMEOUT_MS", "2000")]).await;
    let mut ws = s.connect("/rtm/voice", &[]).await.unwrap();
    ws.send(connected()).await.unwrap();
    ws.send(start()).await.unwrap();
    s.wait_log("stream started").await;
    s.signal("TERM");
    assert_eq!(
        expect_close(&mut ws, T).await,
        (1000, "server draining".into())
    );
    // Twilio answers the close (here: the connection goes), as the server expects.
    drop(ws);
    assert_eq!(s.wait_exit(T).await, Some(0));
    let logs = s.logs();
    assert!(logs.contains("\"drained_cleanly\":true"), "{logs}");
    assert!(logs.contains("\"outcome\":\"drained\""));
}

#[tokio::test]
async fn invalid_config_fails_start_naming_the_variable() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_media-ws"))
        .env_clear()
        .env("IDLE_TIMEOUT_MS", "soon")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("IDLE_TIMEOUT_MS"), "{err}");
    assert_eq!(err.lines().count(), 1);
}

#[tokio::test]
async fn a_paid_agent_never_starts_open_unless_asked() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_media-ws"))
        .env_clear()
        .env("AGENT", "elevenlabs")
        .env("ELEVENLABS_AGENT_ID", "agent_test")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MEDIA_SHARED_SECRET") && err.contains("ALLOW_UNAUTHENTICATED=true"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    // Asked for: it starts, and says so.
    let s = Server::start(&[
        ("AGENT", "elevenlabs"),
        ("ELEVENLABS_AGENT_ID", "agent_test"),
        ("ALLOW_UNAUTHENTICATED", "true"),
    ])
    .await;
    s.wait_log("ALLOW_UNAUTHENTICATED=true").await;
}

#[tokio::test]
async fn healthcheck_subcommand_probes_the_server() {
    let s = Server::start(&[]).await;
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_media-ws"))
        .arg("healthcheck")
        .env_clear()
        .env("PORT", s.addr.port().to_string())
        .status()
        .await
        .unwrap();
    assert!(status.success());
    drop(s);
    // Nothing listening on the port.
    let refused = support::refused_port();
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_media-ws"))
        .arg("healthcheck")
        .env_clear()
        .env("PORT", refused.port.to_string())
        .status()
        .await
        .unwrap();
    assert_eq!(status.code(), Some(1));
}

/// Markers planted in every place a call carries caller data; none may reach the log.
#[tokio::test]
async fn logs_never_contain_tokens_parameters_payloads_or_numbers() {
    let secret = "SECRETKEYMARKER";
    // trace: the most a misconfigured deployment could print.
    let s = Server::start(&[("MEDIA_SHARED_SECRET", secret), ("RUST_LOG", "trace")]).await;
    let token = jwt(
        secret,
        json!({"aud":"media","exp":now()+60,"sub":CALL_SID,"jti":"JTIMARKER"}),
    );
    let mut ws = s
        .connect(&format!("/rtm/voice/jwt/{token}?extra=QUERYMARKER"), &[])
        .await
        .unwrap();
    ws.send(connected()).await.unwrap();
    ws.send(start_with(
        CALL_SID,
        json!({"patient":"PARAMVALUEMARKER","from":"+15551234567","token":"PARAMTOKENMARKER"}),
    ))
    .await
    .unwrap();
    let payload = base64::engine::general_purpose::STANDARD.encode(b"AUDIOMARKERAUDIOMARKER");
    for i in 0..5 {
        ws.send(media(i + 2, &payload)).await.unwrap();
    }
    ws.send(Message::text(
        json!({"event":"dtmf","streamSid":STREAM_SID,"sequenceNumber":"8","dtmf":{"track":"inbound_track","digit":"9"}}).to_string(),
    ))
    .await
    .unwrap();
    ws.send(stop(9)).await.unwrap();
    expect_close(&mut ws, T).await;
    // A refused handshake with a token in the path and the query.
    let bad = jwt("WRONGSECRETMARKER", json!({"aud":"media","exp":now()+60}));
    assert_eq!(
        s.connect(&format!("/rtm/voice/jwt/{bad}?token=QTOKENMARKER"), &[])
            .await
            .err(),
        Some(401)
    );
    // A malformed message whose text carries a marker.
    let mut ws = s
        .connect(&format!("/rtm/voice/jwt/{token}"), &[])
        .await
        .unwrap();
    ws.send(Message::text(
        "{\"event\":\"start\",\"start\":\"MALFORMEDMARKER\"",
    ))
    .await
    .unwrap();
    expect_close(&mut ws, T).await;
    s.wait_log("\"reason\":\"malformed json\"").await;

    let logs = s.logs();
    assert!(
        logs.contains("stream started"),
        "the call was logged at all"
    );
    for marker in [
        secret,
        &token,
        &bad,
        "JTIMARKER",
        "QUERYMARKER",
        "QTOKENMARKER",
        "PARAMVALUEMARKER",
        "PARAMTOKENMARKER",
        "+15551234567",
        "5551234567",
        &payload,
        "AUDIOMARKER",
        "MALFORMEDMARKER",
        "/jwt/",
    ] {
        assert!(!logs.contains(marker), "log leaked {marker:?}:\n{logs}");
    }
}

#[tokio::test]
async fn task_protection_follows_live_calls() {
    let (uri, seen) = fake_ecs_agent().await;
    let s = Server::start(&[
        ("TASK_PROTECTION", "true"),
        ("TASK_PROTECTION_MINUTES", "90"),
        ("ECS_AGENT_URI", uri.as_str()),
    ])
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "an idle task asks for nothing"
    );
    let mut ws = s.connect("/rtm/voice", &[]).await.unwrap();
    ws.send(connected()).await.unwrap();
    s.wait_log("task scale-in protection updated").await;
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "PUT");
        assert_eq!(seen[0].1, "/v4/task-abc/task-protection/v1/state");
        assert_eq!(
            seen[0].2,
            json!({"ProtectionEnabled":true,"ExpiresInMinutes":90})
        );
    }
    play_call(&mut ws, 1).await;
    expect_close(&mut ws, T).await;
    for _ in 0..200 {
        if seen.lock().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen.lock().unwrap()[1].2,
        json!({"ProtectionEnabled":false})
    );
}

#[tokio::test]
async fn emf_lines_report_active_calls() {
    let s = Server::start(&[
        ("EMF_INTERVAL_MS", "100"),
        ("EMF_SERVICE_NAME", "media-ws-test"),
    ])
    .await;
    let mut ws = s.connect("/rtm/voice", &[]).await.unwrap();
    ws.send(connected()).await.unwrap();
    s.wait_log("\"ActiveCalls\":1").await;
    play_call(&mut ws, 1).await;
    expect_close(&mut ws, T).await;
    s.wait_log("call closed").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = s.logs();
    let emf: Vec<Value> = logs
        .lines()
        .filter(|l| l.contains("\"_aws\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The active-calls lines, the interval counts beside them, one line for the call.
    let active: Vec<&Value> = emf
        .iter()
        .filter(|v| v.get("ActiveCalls").is_some())
        .collect();
    assert!(active.len() >= 3);
    assert!(emf.iter().any(|v| v.get("HandshakeRejections").is_some()));
    assert_eq!(
        emf.iter().filter(|v| v.get("Calls").is_some()).count(),
        1,
        "one line per ended call"
    );
    let last = active.last().unwrap();
    assert_eq!(last["ActiveCalls"], 0);
    assert_eq!(last["ServiceName"], "media-ws-test");
    assert_eq!(
        last["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "MediaOrchestrator"
    );
    assert!(active.iter().any(|v| v["ActiveCalls"] == 1));
}
