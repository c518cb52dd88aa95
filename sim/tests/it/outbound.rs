//! `media-sim twilio` drives an outbound call end to end offline: a backend POSTs /calls to
//! the real `media-lambda` (behind an API Gateway front on a Lambda Runtime API), the function
//! creates the call on media-sim's fake Twilio REST API, and media-sim plays Twilio — the
//! signed answer webhook, the callee's WAV streamed in real time into the real `media-ws`, the
//! AMD verdict, the voicemail redirect ending the stream, the final status callback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use media_test_support::lambda;
use media_test_support::media_ws as support;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lambda::{api_gateway, LambdaProcess, RuntimeApi};
use serde_json::json;
use support::fake_el::{Behaviour, FakeEl};
use support::{http_request_with_body, Server};
use tokio::io::{AsyncBufReadExt as _, BufReader};

const SIM: &str = env!("CARGO_BIN_EXE_media-sim");
const SECRET: &str = "media-sim-outbound-secret";
const AUTH_TOKEN: &str = "media-sim-outbound-auth-token";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
/// `POST /token`'s key: required by the function, but it cannot place calls.
const MINT_KEY: &str = "media-sim-outbound-key";
/// `POST /calls`'s own key (`CALLS_API_KEY`).
const CALLS_KEY: &str = "media-sim-outbound-calls-key";
/// The callee: the only number `OUTBOUND_ALLOWLIST` lets `POST /calls` dial here.
const CALLEE: &str = "+15005550006";

/// 3 s of a 440 Hz tone, 8 kHz mono.
fn callee_wav() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "media-sim-outbound-{}.wav",
        uuid::Uuid::new_v4().simple()
    ));
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for i in 0..24_000 {
        let t = f64::from(i) / 8000.0;
        w.write_sample((8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
    path
}

#[tokio::test]
async fn media_sim_plays_twilio_for_an_outbound_call_answered_by_a_machine() {
    let agent = FakeEl::start(Behaviour::default()).await;
    let el = agent.ws_url();
    let ws = Server::start(&[
        ("AGENT", "elevenlabs"),
        ("ELEVENLABS_WS_URL", &el),
        ("MEDIA_SHARED_SECRET", SECRET),
        ("TWILIO_ACCOUNT_SID", ACCOUNT),
    ])
    .await;
    let api = Arc::new(RuntimeApi::start().await);
    let front = api_gateway::start(Arc::clone(&api)).await;

    // media-sim plays Twilio first, on a port it picks: media-lambda is given its address.
    let wav = callee_wav();
    let mut sim = tokio::process::Command::new(SIM)
        .args([
            "twilio",
            "--listen",
            "127.0.0.1:0",
            "--account-sid",
            ACCOUNT,
            "--webhook-base",
            &format!("http://{front}"),
            "--stream-origin",
            &format!("ws://{}", ws.addr),
            "--wav",
            wav.to_str().unwrap(),
            "--answered-by",
            "machine_end_beep",
            "--amd-after",
            "1.5",
            "--ring",
            "0.2",
            "--calls",
            "1",
        ])
        .env("MEDIA_SIM_TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = Arc::new(Mutex::new(String::new()));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    let mut lines = BufReader::new(sim.stdout.take().unwrap()).lines();
    let sink = Arc::clone(&out);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            // "twilio rest api on http://127.0.0.1:PORT (account AC…): waiting for calls"
            if line.contains("waiting for calls") {
                let base = line.split_whitespace().nth(4).map(str::to_string);
                if let (Some(tx), Some(base)) = (ready_tx.take(), base) {
                    let _ = tx.send(base);
                }
            }
            let mut out = sink.lock().unwrap();
            out.push_str(&line);
            out.push('\n');
        }
    });
    let rest_base = tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("media-sim twilio did not start")
        .unwrap();
    assert!(rest_base.starts_with("http://127.0.0.1:"), "{rest_base}");

    let env: Vec<(String, String)> = [
        ("MINT_API_KEY", MINT_KEY.to_string()),
        ("CALLS_API_KEY", CALLS_KEY.to_string()),
        ("OUTBOUND_ALLOWLIST", CALLEE.to_string()),
        ("MEDIA_SHARED_SECRET", SECRET.to_string()),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN.to_string()),
        ("TWILIO_ACCOUNT_SID", ACCOUNT.to_string()),
        ("TWILIO_API_BASE", rest_base),
        (
            "STREAM_URL_BASE",
            "wss://media.example.com/rtm/voice".to_string(),
        ),
        ("OUTBOUND_FROM", "+15005550001".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let lambda = LambdaProcess::start(&api, &env);
    api.wait_ready(Duration::from_secs(20)).await;

    // The backend places the call, as with curl against the deployed API.
    let body = json!({"to": CALLEE, "firstMessage": "Hello from the clinic.",
        "voicemail": "message", "voicemailMessage": "Please call us back."});
    let auth = format!("Bearer {CALLS_KEY}");
    let (status, created) = http_request_with_body(
        front,
        "POST",
        "/calls",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 201, "{created}\n{}", lambda.logs());
    let call_sid = serde_json::from_str::<serde_json::Value>(&created).unwrap()["callSid"]
        .as_str()
        .unwrap()
        .to_string();

    let exit = tokio::time::timeout(Duration::from_secs(30), sim.wait())
        .await
        .expect("media-sim twilio did not finish the call")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = out.lock().unwrap().clone();
    assert!(exit.success(), "{out}\n{}", lambda.logs());
    for expected in [
        format!("call {call_sid} created: ringing"),
        "answer webhook: HTTP 200".to_string(),
        "mark played (echoed)".to_string(),
        "the call was redirected or hung up: Twilio ends the stream".to_string(),
        "close 1000 \"stream stopped\"".to_string(),
        "amd callback (machine_end_beep): HTTP 200".to_string(),
        "twilio rest: voicemail requested: <Say> (20 characters) then <Hangup />".to_string(),
        "status callback (completed): HTTP 200".to_string(),
    ] {
        let found = if expected == "mark played (echoed)" {
            out.lines()
                .any(|l| l.contains("mark ") && l.contains("played (echoed)"))
        } else {
            out.contains(&expected)
        };
        assert!(found, "{expected:?} missing from:\n{out}");
    }
    // The agent heard the callee and got the per-call greeting.
    let init = agent.conversation(0).init.unwrap();
    assert_eq!(
        init["conversation_config_override"]["agent"]["first_message"],
        "Hello from the clinic."
    );
    assert!(
        agent.conversation(0).audio.len() > 8000,
        "the callee's audio reached the agent"
    );
    assert!(
        lambda.logs().contains("\"CallStatus\":\"completed\""),
        "status metric"
    );
    let _ = std::fs::remove_file(wav);
}
