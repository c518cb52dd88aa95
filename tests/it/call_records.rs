//! Call records as shipped: the real `media-ws` with `CALL_EVENTS_BUS` on moto's EventBridge,
//! a rule delivering to an SQS queue (as an operator's rule would), the fake agent and the
//! strict fake Twilio REST API. One `Call Ended` event per call, each with its cause.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use media_test_support::lambda as lambda_support;
use media_test_support::media_ws as support;
use media_test_support::twilio_rest;

use std::collections::BTreeMap;
use std::time::Duration;

use lambda_support::Moto;
use media_orchestrator::auth::{Clock, TokenIssuer};
use media_orchestrator::secret::Secret;
use serde_json::{json, Value};
use support::fake_el::{Behaviour, FakeEl};
use support::*;
use twilio_rest::FakeTwilioRest;

const SECRET: &str = "records-test-secret";
const AUTH_TOKEN: &str = "records-auth-token";
const BUS: &str = "calls";
const TRANSFER_TO: &str = "+15551230000";
/// Planted in a `<Parameter>`: no record, event or log line may carry it.
const MARKER: &str = "MARKER-PARAM-7731";
const CALLER_NUMBER: &str = "+15557654321";

fn path(call_sid: &str) -> String {
    let token = TokenIssuer::new(&Secret::new(SECRET.into()), Clock::System)
        .mint(Some(call_sid), Duration::from_secs(300))
        .unwrap();
    format!("/rtm/voice/jwt/{}", token.token.expose())
}

fn sid(n: u8) -> String {
    format!("CA{n:032}")
}

async fn task(moto: &Moto, fake: &FakeEl, rest: &FakeTwilioRest, extra: &[(&str, &str)]) -> Server {
    let url = fake.ws_url();
    let base = rest.base_url();
    let mut env: Vec<(String, String)> = vec![
        ("AGENT".into(), "elevenlabs".into()),
        ("ELEVENLABS_WS_URL".into(), url),
        ("MEDIA_SHARED_SECRET".into(), SECRET.into()),
        ("TWILIO_ACCOUNT_SID".into(), ACCOUNT_SID.into()),
        ("TWILIO_AUTH_TOKEN".into(), AUTH_TOKEN.into()),
        ("TWILIO_API_BASE".into(), base),
        ("TRANSFER_ALLOWLIST".into(), TRANSFER_TO.into()),
        ("CALL_EVENTS_BUS".into(), BUS.into()),
    ];
    env.extend(moto.env());
    env.extend(extra.iter().map(|(k, v)| ((*k).into(), (*v).into())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Server::start(&env).await
}

async fn call(s: &Server, call_sid: &str) -> Caller {
    let c = Caller::new(s.connect(&path(call_sid), &[]).await.unwrap());
    c.send(connected());
    c.send(start_with(
        call_sid,
        json!({"Direction": "inbound", "note": MARKER, "From": CALLER_NUMBER}),
    ));
    c
}

async fn closed(c: &Caller) -> (u16, String) {
    c.wait("close", |l| l.close.is_some()).await.close.unwrap()
}

#[tokio::test]
async fn every_call_ends_as_one_call_ended_event_with_its_cause() {
    let moto = Moto::start().await;
    let queue = moto.bus_to_queue(BUS, "records").await;
    let rest = FakeTwilioRest::start("127.0.0.1:0", ACCOUNT_SID, AUTH_TOKEN)
        .await
        .unwrap();
    let fake = FakeEl::start(Behaviour {
        echo: false,
        ..Behaviour::default()
    })
    .await;
    let s = task(&moto, &fake, &rest, &[("MAX_CALL_SECONDS", "4")]).await;

    // 1. The agent says goodbye and ends the conversation.
    let c = call(&s, &sid(1)).await;
    fake.wait("conversation 0", |cs| cs.len() == 1 && cs[0].init.is_some())
        .await;
    fake.send_audio(0, &[0x55; 1600], 1);
    c.wait("goodbye heard", |l| l.audio.len() >= 1600).await;
    fake.close(0, 1000);
    assert_eq!(closed(&c).await, (1000, "agent ended".into()));

    // 2. The caller hangs up.
    let c = call(&s, &sid(2)).await;
    fake.wait("conversation 1", |cs| cs.len() == 2 && cs[1].init.is_some())
        .await;
    c.play(&tone(2, 10), 2, Duration::from_millis(20)).await;
    c.send(stop(20));
    assert_eq!(closed(&c).await, (1000, "stream stopped".into()));

    // 3. The agent transfers the call; Twilio takes the <Dial>.
    let c = call(&s, &sid(3)).await;
    fake.wait("conversation 2", |cs| cs.len() == 3 && cs[2].init.is_some())
        .await;
    fake.send_json(
        2,
        json!({"type":"client_tool_call","client_tool_call":{"tool_name":"transfer_to_number",
            "tool_call_id":"t1","parameters":{"phone_number":TRANSFER_TO},"event_id":5}}),
    );
    assert_eq!(closed(&c).await, (1000, "transferred".into()));

    // 4. The caller is still talking at MAX_CALL_SECONDS.
    let c = call(&s, &sid(4)).await;
    assert_eq!(closed(&c).await, (1000, "max duration".into()));

    // 5. An agent that stops answering (another task, same bus).
    let stalled = FakeEl::start(Behaviour {
        stall_after_metadata: true,
        echo: false,
        ..Behaviour::default()
    })
    .await;
    let b = task(&moto, &stalled, &rest, &[("AGENT_SILENCE_MS", "1000")]).await;
    let c = call(&b, &sid(5)).await;
    assert_eq!(closed(&c).await, (1000, "agent unresponsive".into()));

    let events = moto.events(&queue, 5, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 5, "one event per call: {events:#?}");
    let by_call: BTreeMap<String, &Value> = events
        .iter()
        .map(|e| (e["detail"]["callSid"].as_str().unwrap().to_string(), e))
        .collect();
    assert_eq!(by_call.len(), 5, "no call twice");
    for e in &events {
        assert_eq!(e["source"], "media-orchestrator");
        assert_eq!(e["detail-type"], "Call Ended");
        let d = &e["detail"];
        assert_eq!(d["direction"], "inbound");
        assert_eq!(d["accountSid"], ACCOUNT_SID);
        assert!(
            d["conversationId"].as_str().unwrap().starts_with("conv_"),
            "{d}"
        );
        assert!(d["agentConnectMs"].as_u64().is_some(), "{d}");
        assert_eq!(d["version"], env!("CARGO_PKG_VERSION"));
        assert!(d["startedAt"].as_str().unwrap().ends_with('Z'));
        let text = d.to_string();
        for secret in [MARKER, CALLER_NUMBER, TRANSFER_TO, SECRET, AUTH_TOKEN] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    let detail = |n: u8| &by_call[&sid(n)]["detail"];
    let endings: Vec<&str> = (1..=5)
        .map(|n| detail(n)["ending"].as_str().unwrap())
        .collect();
    assert_eq!(
        endings,
        [
            "agent_end",
            "caller_hangup",
            "transfer",
            "max_duration",
            "agent_dead"
        ]
    );
    assert!(
        detail(1)["firstAudioMs"].as_u64().is_some(),
        "{}",
        detail(1)
    );
    assert_eq!(detail(1)["agentFormat"], "ulaw_8000");
    assert_eq!(detail(2)["framesIn"], 10);
    assert!(detail(2)["bridgeLatencyMs"]["inbound"]["p99"]
        .as_f64()
        .is_some());
    assert_eq!(
        detail(3)["transfer"],
        json!({"status": "accepted", "twilioCode": null})
    );
    assert_eq!(detail(3)["toolCalls"], json!({"transfer_to_number": 1}));
    assert_eq!(
        s.metric("media_call_events_total{result=\"published\"}")
            .await,
        4.0
    );
    // The record's log line: the same fields, no call content either.
    let logs = s.logs();
    let records: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("\"message\":\"call record\""))
        .collect();
    assert_eq!(records.len(), 4);
    assert!(!logs.contains(MARKER) && !logs.contains(CALLER_NUMBER));
}

#[tokio::test]
async fn a_bus_that_refuses_costs_no_call_and_is_counted() {
    let moto = Moto::start().await;
    let rest = FakeTwilioRest::start("127.0.0.1:0", ACCOUNT_SID, AUTH_TOKEN)
        .await
        .unwrap();
    let fake = FakeEl::start(Behaviour::default()).await;
    // No such bus: PutEvents fails for every entry.
    let s = task(&moto, &fake, &rest, &[("CALL_EVENTS_BUS", "no-such-bus")]).await;
    for n in 1..=2 {
        let c = call(&s, &sid(n)).await;
        let audio = tone(n, 10);
        c.play(&audio, 2, Duration::from_millis(20)).await;
        c.wait("echo", |l| l.audio.len() >= audio.len()).await;
        c.send(stop(20));
        assert_eq!(closed(&c).await, (1000, "stream stopped".into()));
    }
    let failed = "media_call_events_total{result=\"failed\"}";
    for _ in 0..100 {
        if s.metric(failed).await >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.metric(failed).await, 2.0, "{}", s.logs());
    assert_eq!(s.metric("media_calls_total{outcome=\"normal\"}").await, 2.0);
    let logs = s.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("refused by EventBridge") || l.contains("PutEvents failed"))
        .expect("the failure is logged");
    assert!(line.contains("error_code"), "logged with its code: {line}");
}

#[tokio::test]
async fn twilios_final_status_is_a_call_completed_event_joined_on_the_call_sid() {
    use lambda_support::{sign_form, twilio_post, LambdaProcess, RuntimeApi};
    let moto = Moto::start().await;
    let queue = moto.bus_to_queue(BUS, "completed").await;
    let api = RuntimeApi::start().await;
    let mut env: Vec<(String, String)> = [
        ("MINT_API_KEY", "records-mint-key"),
        ("MEDIA_SHARED_SECRET", SECRET),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("STREAM_URL_BASE", "wss://media.example.com/rtm/voice"),
        ("CALL_EVENTS_BUS", BUS),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.extend(moto.env());
    let _lambda = LambdaProcess::start(&api, &env);
    api.wait_ready(Duration::from_secs(20)).await;

    // The stream of an inbound call on media-ws, then Twilio's final status for it.
    let rest = FakeTwilioRest::start("127.0.0.1:0", ACCOUNT_SID, AUTH_TOKEN)
        .await
        .unwrap();
    let fake = FakeEl::start(Behaviour::default()).await;
    let s = task(&moto, &fake, &rest, &[]).await;
    let c = call(&s, &sid(7)).await;
    c.play(&tone(7, 5), 2, Duration::from_millis(20)).await;
    c.send(stop(10));
    closed(&c).await;

    let url = "https://api.example.com/calls/status";
    let status = |call_sid: String, signed_with: &str| {
        let mut e = twilio_post(url);
        let fields = [
            ("CallSid", call_sid.as_str()),
            ("AccountSid", ACCOUNT_SID),
            ("CallStatus", "completed"),
            ("CallDuration", "42"),
            ("Direction", "inbound"),
            ("From", CALLER_NUMBER),
        ];
        sign_form(&mut e, &fields, url, signed_with);
        e
    };
    // A forged callback is refused and publishes nothing.
    assert_eq!(api.call(&status(sid(8), "not-the-token")).await.status, 403);
    assert_eq!(api.call(&status(sid(7), AUTH_TOKEN)).await.status, 200);

    let events = moto.events(&queue, 2, Duration::from_secs(20)).await;
    let kinds: BTreeMap<&str, &Value> = events
        .iter()
        .map(|e| (e["detail-type"].as_str().unwrap(), &e["detail"]))
        .collect();
    assert_eq!(events.len(), 2, "{events:#?}");
    let (ended, completed) = (kinds["Call Ended"], kinds["Call Completed"]);
    assert_eq!(
        ended["callSid"], completed["callSid"],
        "they join on callSid"
    );
    assert_eq!(completed["callSid"], sid(7));
    assert_eq!(completed["direction"], "inbound");
    assert_eq!(completed["callStatus"], "completed");
    assert_eq!(completed["callDurationSeconds"], 42);
    assert_eq!(completed["answeredBy"], Value::Null);
    assert!(!completed.to_string().contains(CALLER_NUMBER));
    // Nothing more arrives (the forged one).
    assert!(moto
        .events(&queue, 1, Duration::from_secs(1))
        .await
        .is_empty());
}
