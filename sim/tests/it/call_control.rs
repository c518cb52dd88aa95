//! How calls end, across the whole system: the real `media-ws` between media-sim's Twilio
//! (real-time playback, marks echoed only once the audio before them has played), a fake
//! ElevenLabs agent, and the strict loopback Twilio REST API. Goodbyes heard in full before
//! the hang-up, hang-up before the stream closes, transfers allowed and refused, unknown
//! tools answered, keypad entries reaching the agent, a half-open agent noticed, barge-in
//! during a goodbye.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use media_test_support::media_ws as support;

use std::collections::BTreeMap;
use std::time::Duration;

use media_sim::caller::{self, CallOptions, CallReport, Live, Step, ACCOUNT_SID};
use media_sim::twilio_rest::FakeTwilioRest;
use serde_json::{json, Value};
use support::fake_el::{Behaviour, FakeEl};
use support::Server;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const AUTH_TOKEN: &str = "test-auth-token";
/// The stream-token secret: each call's token is bound to its CallSid (JWT `sub`), as the
/// Lambda's webhook mints it — only a bound stream hangs up or transfers its call.
const SHARED_SECRET: &str = "call-control-secret";
/// media-lambda's `/transfer/result`, as the infra template passes it (TransferActionUrl).
const ACTION_URL: &str = "https://abc123defg.execute-api.us-east-1.amazonaws.com/transfer/result";

struct Rig {
    fake: FakeEl,
    rest: FakeTwilioRest,
    server: Server,
}

async fn rig(behaviour: Behaviour, extra: &[(&str, &str)]) -> Rig {
    let fake = FakeEl::start(behaviour).await;
    let rest = FakeTwilioRest::start("127.0.0.1:0", ACCOUNT_SID, AUTH_TOKEN)
        .await
        .unwrap();
    let (url, base) = (fake.ws_url(), rest.base_url());
    let mut env = vec![
        ("AGENT", "elevenlabs"),
        ("MEDIA_SHARED_SECRET", SHARED_SECRET),
        ("ELEVENLABS_WS_URL", url.as_str()),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("TWILIO_API_BASE", base.as_str()),
    ];
    env.extend_from_slice(extra);
    let server = Server::start(&env).await;
    Rig { fake, rest, server }
}

/// Runs one call of `seconds` of caller audio in the background; returns when it started
/// (the socket opened) and the handle.
async fn call(
    rig: &Rig,
    seconds: u64,
    mut opts: CallOptions,
) -> (Instant, tokio::task::JoinHandle<CallReport>) {
    let call_sid = format!("CA{}", uuid::Uuid::new_v4().simple());
    opts.sids = Some((call_sid.clone(), ACCOUNT_SID.to_string()));
    let ws = caller::connect(&rig.server.url("/rtm/voice"), Some(&bound_token(&call_sid)))
        .await
        .unwrap();
    let opened = Instant::now();
    let audio = vec![0xffu8; 8000 * seconds as usize];
    let task = tokio::spawn(async move { caller::run(ws, &audio, &opts, &Live::default()).await });
    (opened, task)
}

/// A stream token bound to `call_sid`, as the Lambda's voice webhook mints it.
fn bound_token(call_sid: &str) -> String {
    use media_orchestrator::auth::{Clock, TokenIssuer};
    TokenIssuer::new(
        &media_orchestrator::secret::Secret::new(SHARED_SECRET.into()),
        Clock::System,
    )
    .mint(Some(call_sid), Duration::from_secs(300))
    .unwrap()
    .token
    .expose()
    .clone()
}

/// An agent that speaks only when the test makes it.
fn silent() -> Behaviour {
    Behaviour {
        echo: false,
        ..Behaviour::default()
    }
}

/// A rig with a silent agent, a call of `seconds` under way and its conversation started.
async fn talking(
    seconds: u64,
    extra: &[(&str, &str)],
) -> (Rig, Instant, tokio::task::JoinHandle<CallReport>) {
    let rig = rig(silent(), extra).await;
    let (opened, call) = call(&rig, seconds, options()).await;
    conversation_started(&rig.fake).await;
    (rig, opened, call)
}

fn options() -> CallOptions {
    CallOptions {
        params: BTreeMap::from([
            ("To".to_string(), "+15550001111".to_string()),
            ("Direction".to_string(), "inbound".to_string()),
        ]),
        linger: Duration::from_secs(30),
        max_linger: Duration::from_secs(30),
        ..CallOptions::default()
    }
}

fn closed_at(report: &CallReport, opened: Instant) -> (Instant, u16, String) {
    report
        .timeline
        .iter()
        .find_map(|e| match &e.step {
            Step::Closed { code, reason } => Some((opened + e.at, *code, reason.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no close: {:?}", report.timeline))
}

/// A REST request made before the stream's close. The close goes out only once Twilio has
/// answered the request, a few ms later; `closed` is rebuilt from the caller's own clock,
/// which starts a little after `opened`, hence the 100 ms allowance.
fn assert_sent_before_close(request_at: Instant, closed: Instant) {
    assert!(
        request_at <= closed + Duration::from_millis(100),
        "request {:?} after the close",
        request_at - closed
    );
}

/// When the caller last heard audio end: the last mark echoed because its audio played.
fn last_played(report: &CallReport, opened: Instant) -> Instant {
    report
        .timeline
        .iter()
        .rev()
        .find_map(|e| matches!(e.step, Step::MarkPlayed(_)).then_some(opened + e.at))
        .unwrap()
}

fn tool_call(name: &str, id: &str, params: Value) -> Value {
    json!({"type":"client_tool_call","client_tool_call":{"tool_name":name,"tool_call_id":id,"parameters":params,"event_id":5}})
}

async fn conversation_started(fake: &FakeEl) {
    fake.wait("conversation", |c| {
        c.first().is_some_and(|c| c.init.is_some())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn tool_result(fake: &FakeEl, id: &str) -> (Instant, Value) {
    let id = id.to_string();
    fake.wait("tool result", |c| {
        c[0].messages
            .iter()
            .any(|(_, m)| m["tool_call_id"] == id.as_str())
    })
    .await;
    fake.conversation(0)
        .messages
        .into_iter()
        .find(|(_, m)| m["tool_call_id"] == id.as_str())
        .unwrap()
}

#[tokio::test]
async fn a_three_second_goodbye_is_heard_in_full_then_the_call_is_hung_up() {
    let (rig, opened, call) = talking(10, &[]).await;
    // Three seconds of goodbye, sent faster than real time as ElevenLabs does, then 1000.
    let sent_at = Instant::now();
    for _ in 0..6 {
        rig.fake.send_audio(0, &[0x55; 4000], 1);
    }
    rig.fake.close(0, 1000);
    let report = call.await.unwrap();
    let requests = rig.rest.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let hang_up = &requests[0];
    assert_eq!(hang_up.field("Status"), Some("completed"));
    assert!(hang_up.call_sid.starts_with("CA"));
    assert_eq!(
        report.bytes_received, 24_000,
        "the whole goodbye reached Twilio"
    );
    let played = last_played(&report, opened);
    assert!(
        played >= sent_at + Duration::from_millis(2_900),
        "the goodbye played for 3 s: {:?}",
        played - sent_at
    );
    assert!(
        hang_up.at >= played,
        "hang-up only after the goodbye was heard"
    );
    let (closed, code, reason) = closed_at(&report, opened);
    assert!(
        hang_up.at <= closed,
        "hang-up request before the stream closes"
    );
    assert_eq!((code, reason.as_str()), (1000, "agent ended"));
    assert_eq!(
        caller::ending(&{
            let mut r = report.clone();
            caller::add_rest_requests(&mut r, opened, &requests);
            r
        }),
        "hang-up by the agent, after its last words played"
    );
    assert_eq!(
        rig.server
            .metric("media_twilio_rest_requests_total{op=\"hang_up\",result=\"ok\",code=\"none\"}")
            .await,
        1.0
    );
    assert_eq!(
        rig.server
            .metric("media_call_control_events_total{event=\"agent_end\"}")
            .await,
        1.0
    );
    assert!(
        rig.server.logs().contains("conv_0"),
        "conversation_id on the call's log"
    );
}

#[tokio::test]
async fn without_rest_credentials_the_stream_closes_after_the_goodbye() {
    let fake = FakeEl::start(silent()).await;
    let url = fake.ws_url();
    let server = Server::start(&[
        ("AGENT", "elevenlabs"),
        ("ALLOW_UNAUTHENTICATED", "true"),
        ("ELEVENLABS_WS_URL", url.as_str()),
    ])
    .await;
    let ws = caller::connect(&server.url("/rtm/voice"), None)
        .await
        .unwrap();
    let opened = Instant::now();
    let call = tokio::spawn(async move {
        caller::run(ws, &[0xff; 80_000], &options(), &Live::default()).await
    });
    conversation_started(&fake).await;
    let sent_at = Instant::now();
    fake.send_audio(0, &[0x55; 16_000], 1);
    fake.close(0, 1000);
    let report = call.await.unwrap();
    let (closed, code, _) = closed_at(&report, opened);
    assert_eq!(code, 1000);
    assert!(
        closed >= sent_at + Duration::from_millis(1_900),
        "{:?}",
        closed - sent_at
    );
    assert_eq!(report.bytes_received, 16_000);
}

#[tokio::test]
async fn an_allowed_transfer_plays_the_hand_off_line_then_dials() {
    let (rig, opened, call) = talking(
        10,
        &[
            ("TRANSFER_ALLOWLIST", "+1555123*"),
            ("TRANSFER_TIMEOUT_SECONDS", "20"),
            ("TRANSFER_ACTION_URL", ACTION_URL),
        ],
    )
    .await;
    rig.fake.send_json(
        0,
        tool_call(
            "transfer_to_number",
            "toolu_t",
            json!({"phone_number":"+15551230000","reason":"billing"}),
        ),
    );
    // The hand-off line, one second of it.
    rig.fake.send_audio(0, &[0x55; 8000], 2);
    let report = call.await.unwrap();
    let requests = rig.rest.requests();
    assert_eq!(requests.len(), 1);
    let twiml = requests[0].field("Twiml").unwrap();
    let doc = roxmltree_lite(twiml);
    assert!(doc.contains(r#"callerId="+15550001111""#), "{twiml}");
    assert!(doc.contains(r#"timeout="20""#), "{twiml}");
    assert!(doc.contains("<Number>+15551230000</Number>"), "{twiml}");
    assert!(
        doc.contains(&format!(r#"action="{ACTION_URL}""#)) && doc.contains(r#"method="POST""#),
        "an unanswered transfer comes back to the Lambda: {twiml}"
    );
    assert!(!doc.contains("<Hangup"), "{twiml}");
    assert!(
        requests[0].at >= last_played(&report, opened),
        "hand-off line heard first"
    );
    assert_eq!(report.bytes_received, 8000);
    let (closed, code, reason) = closed_at(&report, opened);
    assert_sent_before_close(requests[0].at, closed);
    assert_eq!((code, reason.as_str()), (1000, "transferred"));
    let conv = rig.fake.conversation(0);
    assert_eq!(conv.close_code, Some(1000), "the agent leg is closed");
}

/// The TwiML as text, checked to be one `<Response>` document.
fn roxmltree_lite(twiml: &str) -> String {
    assert!(twiml.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><Response>"#));
    assert!(twiml.ends_with("</Response>"));
    twiml.to_string()
}

#[tokio::test]
async fn a_refused_transfer_and_an_unknown_tool_are_answered_and_the_call_goes_on() {
    let rig = rig(
        Behaviour::default(),
        &[("TRANSFER_ALLOWLIST", "+15551230000")],
    )
    .await;
    let (opened, call) = call(
        &rig,
        3,
        CallOptions {
            linger: Duration::from_secs(1),
            ..options()
        },
    )
    .await;
    conversation_started(&rig.fake).await;
    let asked = Instant::now();
    rig.fake.send_json(
        0,
        tool_call(
            "transfer_to_number",
            "t1",
            json!({"phone_number":"+19005550100"}),
        ),
    );
    rig.fake
        .send_json(0, tool_call("lookup_order", "t2", json!({"order":"42"})));
    let (at, refused) = tool_result(&rig.fake, "t1").await;
    assert_eq!(refused["is_error"], true);
    assert!(refused["result"]
        .as_str()
        .unwrap()
        .contains("not on this line's transfer list"));
    let (at2, unknown) = tool_result(&rig.fake, "t2").await;
    assert_eq!(unknown["is_error"], true);
    assert!(
        at.max(at2) - asked < Duration::from_secs(1),
        "answered within 1 s"
    );
    let report = call.await.unwrap();
    assert!(rig.rest.requests().is_empty(), "nothing dialled");
    let (_, code, reason) = closed_at(&report, opened);
    assert_eq!(
        (code, reason.as_str()),
        (1000, "stream stopped"),
        "the caller hung up normally"
    );
    assert!(
        !rig.server.logs().contains("19005550100"),
        "no number in the logs"
    );
}

#[tokio::test]
async fn keypad_digits_reach_the_agent_as_one_turn_and_never_the_logs() {
    let rig = rig(Behaviour::default(), &[]).await;
    let opts = CallOptions {
        dtmf: "9*7*3#".into(),
        dtmf_at: Duration::from_millis(800),
        linger: Duration::from_secs(1),
        ..options()
    };
    let (_, call) = call(&rig, 3, opts).await;
    rig.fake
        .wait("keypad entry", |c| {
            c.first()
                .is_some_and(|c| c.messages.iter().any(|(_, m)| m["type"] == "user_message"))
        })
        .await;
    let report = call.await.unwrap();
    assert!(report
        .timeline
        .iter()
        .any(|e| e.step == Step::KeypadSent(6)));
    let messages: Vec<Value> = rig
        .fake
        .conversation(0)
        .messages
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| m["type"] == "user_message")
        .collect();
    assert_eq!(
        messages,
        [json!({"type":"user_message","text":"[keypad] 9*7*3#"})]
    );
    assert!(!rig.server.logs().contains("9*7*3"), "digits never logged");
}

/// A TCP proxy to `upstream` that forwards both ways for `stall_after`, then silently stops
/// forwarding while both sockets stay open: a half-open agent.
async fn stalling_proxy(
    upstream: std::net::SocketAddr,
    stall_after: Duration,
) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let server = TcpStream::connect(upstream).await.unwrap();
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let until = Instant::now() + stall_after;
                tokio::join!(pump(cr, sw, until), pump(sr, cw, until));
            });
        }
    });
    addr
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    until: Instant,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match tokio::io::AsyncReadExt::read(&mut from, &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if Instant::now() < until && to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    // Nothing flows, nothing closes.
    std::future::pending::<()>().await;
    drop(to);
}

#[tokio::test]
async fn a_half_open_agent_is_detected_and_the_call_handed_back_within_20_s() {
    let fake = FakeEl::start(Behaviour::default()).await;
    let proxy = stalling_proxy(fake.addr, Duration::from_secs(2)).await;
    let url = format!("ws://{proxy}/v1/convai/conversation");
    let rig = Rig {
        rest: FakeTwilioRest::start("127.0.0.1:0", ACCOUNT_SID, AUTH_TOKEN)
            .await
            .unwrap(),
        server: Server::start(&[
            ("AGENT", "elevenlabs"),
            ("MEDIA_SHARED_SECRET", SHARED_SECRET),
            ("ELEVENLABS_WS_URL", url.as_str()),
        ])
        .await,
        fake,
    };
    let (opened, call) = call(&rig, 40, options()).await;
    let report = call.await.unwrap();
    let (closed, code, reason) = closed_at(&report, opened);
    assert_eq!(
        (code, reason.as_str()),
        (1000, "agent unresponsive"),
        "fallback TwiML runs"
    );
    let dead_air = closed - (opened + Duration::from_secs(2));
    assert!(dead_air < Duration::from_secs(20), "{dead_air:?}");
    assert!(
        dead_air >= Duration::from_secs(10),
        "not before the silence limit: {dead_air:?}"
    );
    assert_eq!(
        rig.server
            .metric("media_call_control_events_total{event=\"agent_dead\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_caller_who_interrupts_the_goodbye_hears_the_agent_out_before_the_hang_up() {
    let (rig, opened, call) = talking(15, &[]).await;
    rig.fake
        .send_json(0, tool_call("end_call", "bye", json!({"reason":"done"})));
    rig.fake.send_audio(0, &[0x55; 16_000], 3);
    // The caller talks over it one second in: the agent interrupts and answers for 1.5 s.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    rig.fake.send_json(
        0,
        json!({"type":"interruption","interruption_event":{"event_id":3}}),
    );
    let answered = Instant::now();
    rig.fake.send_audio(0, &[0x66; 12_000], 4);
    tokio::time::sleep(Duration::from_millis(200)).await;
    rig.fake.close(0, 1000);
    let report = call.await.unwrap();
    assert!(report.clears >= 1);
    let requests = rig.rest.requests();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].at >= answered + Duration::from_millis(1_400),
        "the answer after the barge-in played before the hang-up: {:?}",
        requests[0].at - answered
    );
    assert!(requests[0].at >= last_played(&report, opened));
    assert_eq!(closed_at(&report, opened).1, 1000);
}

#[tokio::test]
async fn a_transfer_twilio_refuses_is_told_to_the_agent_and_the_caller_stays_with_it() {
    let rig = rig(
        silent(),
        &[
            ("TRANSFER_ALLOWLIST", "+4420*"),
            ("TRANSFER_ACTION_URL", ACTION_URL),
        ],
    )
    .await;
    rig.rest.fail_with(Some((400, 21215)));
    let opts = CallOptions {
        linger: Duration::from_millis(1500),
        ..options()
    };
    let (opened, call) = call(&rig, 10, opts).await;
    conversation_started(&rig.fake).await;
    rig.fake.send_json(
        0,
        tool_call(
            "transfer_to_number",
            "tx",
            json!({"phone_number":"+442079460000"}),
        ),
    );
    // The tool result comes after Twilio's refusal, on the agent leg still open.
    let (answered, result) = tool_result(&rig.fake, "tx").await;
    let refused = rig.rest.refused();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].field("Twiml").unwrap().contains("<Dial"));
    assert!(refused[0].at <= answered);
    assert!(rig.rest.requests().is_empty());
    assert_eq!(result["is_error"], true);
    assert!(
        result["result"]
            .as_str()
            .unwrap()
            .contains("did not go through"),
        "{result}"
    );
    // The agent tells the caller, and the caller hears it: the call goes on.
    let before = rig.fake.conversation(0).audio.len();
    rig.fake.send_audio(0, &[0x66; 8000], 7);
    rig.fake
        .wait("more caller audio", |c| c[0].audio.len() > before + 8000)
        .await;
    let report = call.await.unwrap();
    assert_eq!(report.bytes_received, 8000, "the agent's answer was heard");
    let (_, code, reason) = closed_at(&report, opened);
    assert_eq!(
        (code, reason.as_str()),
        (1000, "stream stopped"),
        "the caller hung up normally, later"
    );
    assert_eq!(rig.fake.conversation(0).close_code, Some(1000));
    assert_eq!(
        rig.server
            .metric("media_twilio_rest_requests_total{op=\"transfer\",result=\"refused\",code=\"21215\"}")
            .await,
        1.0
    );
    assert_eq!(
        rig.server
            .metric("media_call_control_events_total{event=\"transfer_failed\"}")
            .await,
        1.0
    );
    let logs = rig.server.logs();
    assert!(logs.contains("21215"), "Twilio's code is logged");
    assert!(!logs.contains("442079460000"), "the number is not");
    assert!(!logs.contains(AUTH_TOKEN), "nor the credential");
}

/// The agent's messages of conversation 0 of `type`.
fn agent_got(fake: &FakeEl, kind: &str) -> Vec<Value> {
    fake.conversation(0)
        .messages
        .into_iter()
        .filter(|(_, m)| m["type"] == kind)
        .map(|(_, m)| m)
        .collect()
}

#[tokio::test]
async fn a_call_at_max_call_seconds_hears_the_wrap_up_and_its_last_words_then_is_hung_up() {
    // A 9 s limit: the wrap-up request at 6 s (a third before), the ending at 9 s.
    let (rig, opened, call) = talking(30, &[("MAX_CALL_SECONDS", "9")]).await;
    rig.fake
        .wait("the wrap-up", |c| {
            c[0].messages
                .iter()
                .any(|(_, m)| m["type"] == "contextual_update")
        })
        .await;
    let asked = Instant::now();
    let wrap_up = agent_got(&rig.fake, "contextual_update");
    assert_eq!(wrap_up.len(), 1);
    assert!(
        wrap_up[0]["text"]
            .as_str()
            .unwrap()
            .contains("about 3 seconds"),
        "{}",
        wrap_up[0]
    );
    let since_open = asked - opened;
    assert!(
        (Duration::from_millis(5_500)..Duration::from_millis(7_500)).contains(&since_open),
        "{since_open:?}"
    );
    // The agent's last words, two seconds, sent as the limit arrives.
    tokio::time::sleep_until(opened + Duration::from_millis(8_800)).await;
    rig.fake.send_audio(0, &[0x55; 16_000], 3);
    let report = call.await.unwrap();
    assert_eq!(
        report.bytes_received, 16_000,
        "the last words reached Twilio"
    );
    let requests = rig.rest.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].field("Status"), Some("completed"));
    let played = last_played(&report, opened);
    assert!(
        played >= opened + Duration::from_millis(10_500),
        "{:?}",
        played - opened
    );
    assert!(
        requests[0].at >= played,
        "hang-up after the last words played"
    );
    let (closed, code, reason) = closed_at(&report, opened);
    assert_sent_before_close(requests[0].at, closed);
    assert_eq!((code, reason.as_str()), (1000, "max duration"));
    assert!(
        closed < opened + Duration::from_secs(20),
        "well before the caller's 30 s"
    );
    assert_eq!(
        rig.server
            .metric("media_call_control_events_total{event=\"max_duration\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn sigterm_with_live_calls_ends_each_gracefully_before_the_drain_timeout() {
    let mut rig = rig(silent(), &[("DRAIN_TIMEOUT_MS", "10000")]).await;
    let (first_opened, first) = call(&rig, 30, options()).await;
    let (second_opened, second) = call(&rig, 30, options()).await;
    rig.fake
        .wait("two conversations", |c| {
            c.len() == 2 && c.iter().all(|c| c.init.is_some())
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let term = Instant::now();
    rig.server.signal("TERM");
    // Each agent is asked to wrap up at once, and says a one-second goodbye.
    rig.fake
        .wait("both wrap-ups", |c| {
            c.iter().all(|c| {
                c.messages
                    .iter()
                    .any(|(_, m)| m["type"] == "contextual_update")
            })
        })
        .await;
    assert!(term.elapsed() < Duration::from_secs(1));
    rig.fake.send_audio(0, &[0x55; 8000], 4);
    rig.fake.send_audio(1, &[0x56; 8000], 4);
    for (opened, call) in [(first_opened, first), (second_opened, second)] {
        let report = call.await.unwrap();
        assert_eq!(report.bytes_received, 8000, "the goodbye was heard");
        let (closed, code, reason) = closed_at(&report, opened);
        assert_eq!((code, reason.as_str()), (1000, "server draining"));
        assert!(
            closed < term + Duration::from_secs(10),
            "before DRAIN_TIMEOUT_MS: {:?}",
            closed - term
        );
        assert!(last_played(&report, opened) <= closed);
    }
    let requests = rig.rest.requests();
    assert_eq!(requests.len(), 2, "both hung up through REST: {requests:?}");
    assert!(requests
        .iter()
        .all(|r| r.field("Status") == Some("completed")));
    assert_eq!(rig.server.wait_exit(Duration::from_secs(15)).await, Some(0));
    let logs = rig.server.logs();
    assert!(logs.contains("\"drained_cleanly\":true"), "{logs}");
    assert!(
        !logs.contains("server shutting down"),
        "no call needed the 1001"
    );
}

/// An ElevenLabs whose plan is full: every conversation is refused at the WebSocket upgrade
/// with 429 `too_many_concurrent_requests`, as ElevenLabs answers it. Returns the URL.
async fn plan_full_agent() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "ws://{}/v1/convai/conversation",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await;
                let body = r#"{"detail":{"status":"too_many_concurrent_requests","message":"Too many concurrent requests"}}"#;
                let answer = format!(
                    "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test]
async fn a_conversation_elevenlabs_refuses_for_concurrency_goes_to_the_overflow_not_the_apology() {
    let url = plan_full_agent().await;
    let rig = rig(
        silent(),
        &[
            ("ELEVENLABS_WS_URL", url.as_str()),
            ("OVERFLOW_NUMBER", "+15557770000"),
        ],
    )
    .await;
    let (opened, call) = call(&rig, 5, options()).await;
    let report = call.await.unwrap();
    let requests = rig.rest.requests();
    let [redirect] = &requests[..] else {
        panic!("{requests:?}")
    };
    let twiml = redirect.field("Twiml").unwrap();
    assert!(
        twiml.contains("<Dial answerOnBridge=\"true\"><Number>+15557770000</Number></Dial>"),
        "{twiml}"
    );
    let (closed, code, reason) = closed_at(&report, opened);
    assert_eq!((code, reason.as_str()), (1000, "agent capacity"));
    assert_sent_before_close(redirect.at, closed);
    assert!(
        closed < opened + Duration::from_secs(2),
        "not retried: the plan is full"
    );
    assert_eq!(
        rig.server
            .metric("media_calls_total{outcome=\"overflow\"}")
            .await,
        1.0
    );
}
