//! Outbound calls across their whole life, every part real but Twilio: `POST /calls` to the
//! real `media-lambda` through a Lambda Runtime API, the strict fake Twilio REST API
//! (media-sim's, on loopback) receiving the create and the AMD action, Twilio's side played
//! here — the signed answer webhook, the stream into the real `media-ws` at real-time pace,
//! the signed AMD callback — and a fake ElevenLabs agent receiving the overrides. Both
//! binaries log at their most verbose (`trace`, `debug`) and no private value may appear.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use media_test_support::lambda as lambda_support;
use media_test_support::media_ws as support;
use media_test_support::twilio_rest;

use std::time::Duration;

use base64::Engine as _;
use futures_util::SinkExt as _;
use lambda_support::{
    event, sign_form, twilio_post, HttpResponse, LambdaProcess, RuntimeApi, ACCOUNT_SID,
    TEST_AUTH_TOKEN, TEST_MINT_API_KEY,
};
use serde_json::{json, Value};
use support::fake_el::{Behaviour, FakeEl};
use support::{
    connected, echo_marks_until_close, expect_close, media, start_with, stop, Server, SILENCE_B64,
};
use twilio_rest::FakeTwilioRest;

const T: Duration = Duration::from_secs(20);
const SECRET: &str = "outbound-e2e-secret";
const API: &str = "https://abc123defg.execute-api.us-east-1.amazonaws.com";
const PUBLIC_STREAM: &str = "wss://media.example.com";
const CALLEE: &str = "+15005550006";
const OUR_NUMBER: &str = "+15005550001";
/// `POST /calls`'s own key (not the token-minting MINT_API_KEY).
const CALLS_KEY: &str = "test-calls-api-key";
/// What `POST /calls` may dial in these tests.
const ALLOWLIST: &str = "+1500555*";
const TABLE: &str = "media-calls";
/// Values that must never appear in a log, a URL or a form sent to Twilio.
const PRIVATE: [&str; 5] = [
    "Ada Lovelace",
    "cardiology",
    "Remind the patient",
    "Hello Ada",
    "please call the clinic back",
];

struct Rig {
    api: RuntimeApi,
    lambda: LambdaProcess,
    rest: FakeTwilioRest,
}

async fn rig() -> Rig {
    let rest = FakeTwilioRest::start("127.0.0.1:0", ACCOUNT_SID, TEST_AUTH_TOKEN)
        .await
        .unwrap();
    let (api, lambda) = lambda_for(&rest, &[]).await;
    Rig { api, lambda, rest }
}

/// A media-lambda sandbox in front of `rest`, with `extra` environment.
async fn lambda_for(
    rest: &FakeTwilioRest,
    extra: &[(String, String)],
) -> (RuntimeApi, LambdaProcess) {
    let api = RuntimeApi::start().await;
    let mut env: Vec<(String, String)> = [
        ("MINT_API_KEY", TEST_MINT_API_KEY),
        ("CALLS_API_KEY", CALLS_KEY),
        ("OUTBOUND_ALLOWLIST", ALLOWLIST),
        ("MEDIA_SHARED_SECRET", SECRET),
        ("TWILIO_AUTH_TOKEN", TEST_AUTH_TOKEN),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_API_BASE", &rest.base_url()),
        ("STREAM_URL_BASE", &format!("{PUBLIC_STREAM}/rtm/voice")),
        ("OUTBOUND_FROM", OUR_NUMBER),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.extend_from_slice(extra);
    let lambda = LambdaProcess::start(&api, &env);
    api.wait_ready(T).await;
    (api, lambda)
}

fn calls_event(body: &Value, key: Option<&str>) -> Value {
    let mut e = event("calls");
    e["body"] = body.to_string().into();
    // Each test sends the Idempotency-Key it means to.
    e["headers"]
        .as_object_mut()
        .unwrap()
        .remove("idempotency-key");
    match key {
        Some(key) => e["headers"]["authorization"] = format!("Bearer {key}").into(),
        None => {
            e["headers"]
                .as_object_mut()
                .unwrap()
                .remove("authorization");
        }
    }
    e
}

/// The request Twilio makes to `url` with `fields`, signed over exactly that URL.
fn twilio_request(url: &str, fields: &[(&str, &str)]) -> Value {
    let mut e = twilio_post(url);
    sign_form(&mut e, fields, url, TEST_AUTH_TOKEN);
    e
}

fn call_request() -> Value {
    json!({
        "to": CALLEE,
        "dynamicVariables": {"patient_name": "Ada Lovelace", "department": "cardiology"},
        "firstMessage": "Hello Ada, this is your clinic.",
        "prompt": "Remind the patient of tomorrow's appointment.",
        "language": "en",
        "voiceId": "21m00Tcm4TlvDq8ikWAM",
        "voicemail": "message",
        "voicemailMessage": "Hi, this is your clinic: please call the clinic back."
    })
}

/// The EMF line of the media-lambda logs that reports `metric`, parsed.
fn emf(logs: &str, metric: &str) -> Value {
    logs.lines()
        .filter(|l| l.contains("\"_aws\""))
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v.get(metric).is_some())
        .unwrap_or_else(|| panic!("no EMF line for {metric} in:\n{logs}"))
}

fn assert_private(what: &str, text: &str) {
    for value in PRIVATE.iter().chain([&CALLEE]) {
        assert!(!text.contains(value), "{value:?} in {what}");
    }
}

/// Twilio's side of an answered call: the signed answer webhook, its TwiML, the stream.
async fn answer(rig: &Rig, url: &str, call_sid: &str) -> String {
    let fields = [
        ("AccountSid", ACCOUNT_SID),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", "in-progress"),
        ("Called", CALLEE),
        ("Direction", "outbound-api"),
        ("From", OUR_NUMBER),
        ("To", CALLEE),
    ];
    let mut forged = twilio_request(url, &fields);
    forged["headers"]["x-twilio-signature"] = "bm90IHR3aWxpbydzIHNpZ25hdHVyZQ==".into();
    let refused = rig.api.call(&forged).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    let resp = rig.api.call(&twilio_request(url, &fields)).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("text/xml"));
    resp.body
}

#[tokio::test]
async fn an_outbound_call_from_request_through_the_agent_to_the_voicemail() {
    let rig = rig().await;
    let fake = FakeEl::start(Behaviour::default()).await;
    let el = fake.ws_url();
    let ws = Server::start(&[
        ("AGENT", "elevenlabs"),
        ("ELEVENLABS_WS_URL", &el),
        ("MEDIA_SHARED_SECRET", SECRET),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
    ])
    .await;

    // No key, a wrong key, bad input: refused, and Twilio never hears of it.
    assert_eq!(
        rig.api
            .call(&calls_event(&call_request(), None))
            .await
            .status,
        401
    );
    assert_eq!(
        rig.api
            .call(&calls_event(&call_request(), Some("wrong")))
            .await
            .status,
        401
    );
    let mut bad = call_request();
    bad["to"] = "0044 20 7946 0000".into();
    let resp = rig.api.call(&calls_event(&bad, Some(CALLS_KEY))).await;
    assert_eq!(resp.status, 400, "{resp:?}");
    assert_eq!(resp.json()["error"], "invalid_request");
    assert!(
        rig.rest.requests().is_empty(),
        "no Twilio request for refused input"
    );

    // The call is created: 201, and the form Twilio got.
    let resp = rig
        .api
        .call(&calls_event(&call_request(), Some(CALLS_KEY)))
        .await;
    assert_eq!(resp.status, 201, "{resp:?}");
    let call_sid = resp.json()["callSid"].as_str().unwrap().to_string();
    assert_eq!(resp.json()["status"], "queued");
    let requests = rig.rest.requests();
    let [create] = &requests[..] else {
        panic!("{requests:?}")
    };
    assert!(create.created);
    assert_eq!(create.call_sid, call_sid);
    assert_eq!(create.field("To"), Some(CALLEE));
    assert_eq!(
        create.field("From"),
        Some(OUR_NUMBER),
        "OUTBOUND_FROM by default"
    );
    assert_eq!(create.field("Method"), Some("POST"));
    assert_eq!(create.field("MachineDetection"), Some("DetectMessageEnd"));
    assert_eq!(create.field("AsyncAmd"), Some("true"));
    assert_eq!(create.field("AsyncAmdStatusCallbackMethod"), Some("POST"));
    assert_eq!(
        create.field("StatusCallback"),
        Some(format!("{API}/calls/status").as_str())
    );
    let answer_url = create.field("Url").unwrap().to_string();
    let amd_url = create.field("AsyncAmdStatusCallback").unwrap().to_string();
    assert!(
        answer_url.starts_with(&format!("{API}/calls/answer?ctx=v1.")),
        "{answer_url}"
    );
    assert!(
        amd_url.starts_with(&format!("{API}/calls/amd?ctx=v1.")),
        "{amd_url}"
    );
    let form: String = create
        .form
        .iter()
        .map(|(k, v)| format!("{k}={v}&"))
        .collect();
    for value in PRIVATE {
        assert!(!form.contains(value), "{value:?} sent to Twilio in clear");
    }

    // Twilio answers: the TwiML connects a stream whose token is bound to this call.
    let twiml = answer(&rig, &answer_url, &call_sid).await;
    assert_private("the TwiML", &twiml);
    let doc = roxmltree::Document::parse(&twiml).unwrap();
    let stream = doc
        .descendants()
        .find(|n| n.has_tag_name("Stream"))
        .unwrap();
    let stream_url = stream.attribute("url").unwrap();
    assert!(stream_url.len() < 4000, "{}", stream_url.len());
    let params: serde_json::Map<String, Value> = stream
        .children()
        .filter(|n| n.has_tag_name("Parameter"))
        .map(|p| {
            (
                p.attribute("name").unwrap().to_string(),
                p.attribute("value").unwrap().into(),
            )
        })
        .collect();
    let path = stream_url.strip_prefix(PUBLIC_STREAM).unwrap();

    // The sealed context moved into a validly signed token for another call: refused at the
    // upgrade, because the seal is bound to its CallSid.
    let token = path.rsplit('/').next().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let mut claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert!(claims["ctx"].as_str().unwrap().starts_with("v1."));
    claims["sub"] = "CA00000000000000000000000000000000".into();
    claims["jti"] = "moved-context".into();
    let moved = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        ws.connect(&format!("/rtm/voice/jwt/{moved}"), &[])
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        ws.metric("media_handshake_rejections_total{reason=\"token_context\"}")
            .await,
        1.0
    );

    // The stream: connected, start, then caller audio in real time.
    let mut twilio = ws.connect(path, &[]).await.unwrap();
    twilio.send(connected()).await.unwrap();
    twilio
        .send(start_with(&call_sid, Value::Object(params)))
        .await
        .unwrap();
    let mut seq = 2;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for _ in 0..25 {
        tick.tick().await;
        twilio.send(media(seq, SILENCE_B64)).await.unwrap();
        seq += 1;
    }

    // The agent got the overrides and the variables, merged with the stream's parameters.
    fake.wait("the initiation data", |c| {
        c.first().is_some_and(|c| c.init.is_some())
    })
    .await;
    let init = fake.conversation(0).init.unwrap();
    let o = &init["conversation_config_override"];
    assert_eq!(
        o["agent"]["first_message"],
        "Hello Ada, this is your clinic."
    );
    assert_eq!(
        o["agent"]["prompt"]["prompt"],
        "Remind the patient of tomorrow's appointment."
    );
    assert_eq!(o["agent"]["language"], "en");
    assert_eq!(o["tts"]["voice_id"], "21m00Tcm4TlvDq8ikWAM");
    let vars = &init["dynamic_variables"];
    assert_eq!(vars["patient_name"], "Ada Lovelace");
    assert_eq!(vars["department"], "cardiology");
    assert_eq!(vars["CallSid"], call_sid.as_str());
    assert_eq!(vars["Direction"], "outbound-api");

    // A forged AMD verdict does nothing; Twilio's verdict "machine, after the beep" leaves
    // the voicemail: the call is redirected to <Say> then <Hangup/>.
    let amd_fields = [
        ("AccountSid", ACCOUNT_SID),
        ("AnsweredBy", "machine_end_beep"),
        ("CallSid", call_sid.as_str()),
        ("MachineDetectionDuration", "4120"),
    ];
    let mut forged = twilio_request(&amd_url, &amd_fields);
    forged["headers"]["x-twilio-signature"] = "bm90IHR3aWxpbydzIHNpZ25hdHVyZQ==".into();
    assert_eq!(rig.api.call(&forged).await.status, 403);
    assert_eq!(
        rig.rest.requests().len(),
        1,
        "no action on a forged verdict"
    );
    let resp = rig.api.call(&twilio_request(&amd_url, &amd_fields)).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["action"], "message");
    let requests = rig.rest.requests();
    let update = &requests[1];
    assert!(!update.created);
    assert_eq!(update.call_sid, call_sid);
    let voicemail = roxmltree::Document::parse(update.field("Twiml").unwrap())
        .unwrap()
        .root_element()
        .children()
        .map(|n| {
            (
                n.tag_name().name().to_string(),
                n.text().unwrap_or_default().to_string(),
            )
        })
        .collect::<Vec<_>>();
    assert_eq!(
        voicemail,
        [
            (
                "Say".to_string(),
                "Hi, this is your clinic: please call the clinic back.".to_string()
            ),
            ("Hangup".to_string(), String::new())
        ]
    );

    let amd = emf(&rig.lambda.logs(), "OutboundAmdVerdicts");
    assert_eq!(amd["AnsweredBy"], "machine_end_beep");
    assert_eq!(amd["AmdDetectionTime"], 4120);
    assert_eq!(
        amd["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "MediaOrchestrator"
    );

    // Twilio then ends the stream (the call now runs the voicemail TwiML).
    twilio.send(stop(seq)).await.unwrap();
    assert_eq!(
        expect_close(&mut twilio, T).await,
        (1000, "stream stopped".into())
    );
    fake.wait("the agent leg closed", |c| c[0].ended).await;

    assert_private("media-lambda's logs", &rig.lambda.logs());
    assert_private("media-ws's logs", &ws.logs());
    assert!(rig.lambda.logs().contains("outbound call created"));
    assert!(
        ws.logs().contains("\"overrides\""),
        "names of the overrides logged"
    );
}

#[tokio::test]
async fn a_person_keeps_the_agent_a_hang_up_choice_hangs_up_and_twilio_errors_surface() {
    let rig = rig().await;
    let body = json!({"to": CALLEE, "from": "+15005550002", "voicemail": "hangup",
                      "dynamicVariables": {"patient_name": "Ada Lovelace"}});
    let resp = rig.api.call(&calls_event(&body, Some(CALLS_KEY))).await;
    assert_eq!(resp.status, 201, "{resp:?}");
    let call_sid = resp.json()["callSid"].as_str().unwrap().to_string();
    let create = rig.rest.requests()[0].clone();
    assert_eq!(
        create.field("From"),
        Some("+15005550002"),
        "the request's own From"
    );
    let amd_url = create.field("AsyncAmdStatusCallback").unwrap().to_string();
    let verdict = |answered_by: &'static str| {
        twilio_request(
            &amd_url,
            &[
                ("AccountSid", ACCOUNT_SID),
                ("AnsweredBy", answered_by),
                ("CallSid", &call_sid),
            ],
        )
    };

    for person in ["human", "unknown"] {
        let resp = rig.api.call(&verdict(person)).await;
        assert_eq!(
            (resp.status, resp.json()["action"].clone()),
            (200, json!("none"))
        );
    }
    assert_eq!(
        rig.rest.requests().len(),
        1,
        "a person is left with the agent"
    );

    let resp = rig.api.call(&verdict("machine_end_silence")).await;
    assert_eq!(resp.json()["action"], "hangup");
    let requests = rig.rest.requests();
    assert_eq!(requests[1].call_sid, call_sid);
    assert_eq!(
        requests[1].form,
        [("Status".to_string(), "completed".to_string())]
    );

    // The final status (the callback's default `completed` event) is counted; a forged one
    // is refused.
    let status_url = create.field("StatusCallback").unwrap().to_string();
    let status_fields = [
        ("AccountSid", ACCOUNT_SID),
        ("CallDuration", "0"),
        ("CallSid", call_sid.as_str()),
        ("CallStatus", "busy"),
        ("Direction", "outbound-api"),
        ("To", CALLEE),
    ];
    let mut forged = twilio_request(&status_url, &status_fields);
    forged["headers"]["x-twilio-signature"] = "bm90IHR3aWxpbydzIHNpZ25hdHVyZQ==".into();
    assert_eq!(rig.api.call(&forged).await.status, 403);
    let resp = rig
        .api
        .call(&twilio_request(&status_url, &status_fields))
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let status = emf(&rig.lambda.logs(), "OutboundCalls");
    assert_eq!(status["CallStatus"], "busy");
    assert_eq!(status["OutboundCallDuration"], 0);
    assert_eq!(
        status["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["CallStatus"]])
    );

    // The AMD context is not a pass for another account's request.
    let mut other = verdict("fax");
    sign_form(
        &mut other,
        &[
            ("AccountSid", "AC00000000000000000000000000000000"),
            ("AnsweredBy", "fax"),
            ("CallSid", &call_sid),
        ],
        &amd_url,
        TEST_AUTH_TOKEN,
    );
    assert_eq!(rig.api.call(&other).await.status, 403);

    // Twilio refuses the call: its code and message reach the API caller, not the log.
    rig.rest.fail_with(Some((400, 21215)));
    let resp = rig.api.call(&calls_event(&body, Some(CALLS_KEY))).await;
    assert_eq!(resp.status, 422, "{resp:?}");
    let v = resp.json();
    assert_eq!(v["error"], "twilio_error");
    assert_eq!(v["twilioCode"], 21215);
    assert_eq!(v["twilioStatus"], 400);
    assert_eq!(v["twilioMessage"], "failure requested by the test");
    // Our credentials refused: our fault, a 502 — with no credential in it.
    rig.rest.fail_with(Some((401, 20003)));
    let resp: HttpResponse = rig.api.call(&calls_event(&body, Some(CALLS_KEY))).await;
    assert_eq!(resp.status, 502, "{resp:?}");
    assert_eq!(resp.json()["twilioCode"], 20003);
    assert!(!resp.body.contains(TEST_AUTH_TOKEN));
    let logs = rig.lambda.logs();
    assert!(logs.contains("twilio code 21215"), "{logs}");
    assert!(
        !logs.contains("failure requested by the test"),
        "Twilio's message is not logged"
    );
    assert!(!logs.contains(TEST_AUTH_TOKEN));
    assert_private("media-lambda's logs", &logs);
}

/// An inbound call whose agent transfers it to a number nobody answers: the `<Dial>` goes out
/// with the Lambda's `/transfer/result` as its action; Twilio's signed request there (busy,
/// no answer…) gets TwiML that tells the caller and hangs up, and a Transfers metric.
#[tokio::test]
async fn an_unanswered_transfer_comes_back_to_the_lambda_which_says_so_and_hangs_up() {
    const CALL: &str = "CA00000000000000000000000000000042";
    let rig = rig().await;
    let fake = FakeEl::start(Behaviour {
        echo: false,
        ..Behaviour::default()
    })
    .await;
    let el = fake.ws_url();
    let rest = rig.rest.base_url();
    let action = format!("{API}/transfer/result");
    let ws = Server::start(&[
        ("AGENT", "elevenlabs"),
        ("ELEVENLABS_WS_URL", &el),
        ("MEDIA_SHARED_SECRET", SECRET),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", TEST_AUTH_TOKEN),
        ("TWILIO_API_BASE", &rest),
        ("TRANSFER_ALLOWLIST", "+1555123*"),
        ("TRANSFER_ACTION_URL", &action),
    ])
    .await;

    // Twilio's voice webhook, its TwiML, the stream.
    let mut hook = event("twiml");
    let fields = [
        ("AccountSid", ACCOUNT_SID),
        ("CallSid", CALL),
        ("Direction", "inbound"),
        ("To", OUR_NUMBER),
    ];
    sign_form(
        &mut hook,
        &fields,
        lambda_support::EVENT_URL,
        TEST_AUTH_TOKEN,
    );
    let resp = rig.api.call(&hook).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let doc = roxmltree::Document::parse(&resp.body).unwrap();
    let url = doc
        .descendants()
        .find(|n| n.has_tag_name("Stream"))
        .and_then(|n| n.attribute("url"))
        .unwrap();
    let mut twilio = ws
        .connect(url.strip_prefix(PUBLIC_STREAM).unwrap(), &[])
        .await
        .unwrap();
    twilio.send(connected()).await.unwrap();
    twilio
        .send(start_with(CALL, json!({"CallSid": CALL, "To": OUR_NUMBER})))
        .await
        .unwrap();
    fake.wait("the conversation", |c| {
        c.first().is_some_and(|c| c.init.is_some())
    })
    .await;
    fake.send_json(
        0,
        json!({"type":"client_tool_call","client_tool_call":{"tool_name":"transfer_to_number",
            "tool_call_id":"tx","parameters":{"phone_number":"+15551230000"},"event_id":5}}),
    );
    fake.send_audio(0, &[0x55; 4000], 6);

    // Twilio plays the hand-off line and echoes its marks; then the <Dial> replaces the stream.
    let close = echo_marks_until_close(&mut twilio, T).await;
    assert_eq!(close, Some((1000, "transferred".into())));
    let requests = rig.rest.requests();
    let [redirect] = &requests[..] else {
        panic!("{requests:?}")
    };
    assert_eq!(redirect.call_sid, CALL);
    let twiml = redirect.field("Twiml").unwrap();
    let dial_doc = roxmltree::Document::parse(twiml).unwrap();
    let dial = dial_doc
        .descendants()
        .find(|n| n.has_tag_name("Dial"))
        .unwrap();
    assert_eq!(dial.attribute("method"), Some("POST"));
    let action_url = dial.attribute("action").unwrap();
    assert_eq!(action_url, action);

    // Nobody answers: Twilio requests the action URL, signed over it.
    let result = [
        ("AccountSid", ACCOUNT_SID),
        ("CallSid", CALL),
        ("CallStatus", "in-progress"),
        ("DialCallDuration", "0"),
        ("DialCallSid", "CA00000000000000000000000000000043"),
        ("DialCallStatus", "no-answer"),
        ("Direction", "inbound"),
    ];
    let mut forged = twilio_request(action_url, &result);
    forged["headers"]["x-twilio-signature"] = "bm90IHR3aWxpbydzIHNpZ25hdHVyZQ==".into();
    assert_eq!(rig.api.call(&forged).await.status, 403);
    let resp = rig.api.call(&twilio_request(action_url, &result)).await;
    assert_eq!(resp.status, 200, "{resp:?}\n{}", rig.lambda.logs());
    assert_eq!(resp.header("content-type"), Some("text/xml"));
    let doc = roxmltree::Document::parse(&resp.body).unwrap();
    let verbs: Vec<&str> = doc
        .root_element()
        .children()
        .map(|n| n.tag_name().name())
        .collect();
    assert_eq!(verbs, ["Say", "Hangup"], "{}", resp.body);
    assert!(resp.body.contains("the transfer did not go through"));
    let line = emf(&rig.lambda.logs(), "Transfers");
    assert_eq!(line["DialCallStatus"], "no-answer");

    // Answered (and over): nothing more to say.
    let mut answered = result;
    answered[5] = ("DialCallStatus", "completed");
    let resp = rig.api.call(&twilio_request(action_url, &answered)).await;
    assert!(!resp.body.contains("<Say"), "{}", resp.body);
    for logs in [rig.lambda.logs(), ws.logs()] {
        assert!(
            !logs.contains("+15551230000"),
            "no dialled number in the logs"
        );
    }
}

/// moto with the registry table, the fake Twilio REST, and the environment that points a
/// sandbox at that table.
async fn with_registry() -> (lambda_support::Moto, FakeTwilioRest, Vec<(String, String)>) {
    let moto = lambda_support::Moto::start().await;
    moto.create_table(TABLE, "pk", "expires_at").await;
    let rest = FakeTwilioRest::start("127.0.0.1:0", ACCOUNT_SID, TEST_AUTH_TOKEN)
        .await
        .unwrap();
    let mut registry = moto.env();
    registry.push(("CALL_REGISTRY_TABLE".into(), TABLE.into()));
    (moto, rest, registry)
}

fn with_key(mut e: Value, key: &str) -> Value {
    e["headers"]["idempotency-key"] = key.into();
    e
}

#[tokio::test]
async fn post_calls_needs_its_own_key_dials_only_the_allowlist_and_places_one_call_per_idempotency_key(
) {
    let (moto, rest, registry) = with_registry().await;
    // Two sandboxes of the function: Lambda runs concurrent requests in separate ones.
    let (a, _a) = lambda_for(&rest, &registry).await;
    let (b, _b) = lambda_for(&rest, &registry).await;
    let creates = || rest.requests().iter().filter(|r| r.created).count();
    let body = json!({"to": CALLEE});

    // The token-minting key cannot dial; neither can no key.
    for key in [Some(TEST_MINT_API_KEY), None] {
        assert_eq!(a.call(&calls_event(&body, key)).await.status, 401);
    }
    // A premium number abroad: 403, a constant reason, nothing sent to Twilio.
    let resp = a
        .call(&calls_event(
            &json!({"to": "+882345678901"}),
            Some(CALLS_KEY),
        ))
        .await;
    assert_eq!(resp.status, 403, "{resp:?}");
    assert_eq!(resp.json()["error"], "destination_not_allowed");
    assert_eq!(creates(), 0);

    // A client retrying after a timeout: the same key, one call, the same callSid.
    let first = a
        .call(&with_key(calls_event(&body, Some(CALLS_KEY)), "order-1"))
        .await;
    assert_eq!(first.status, 201, "{first:?}");
    let retry = b
        .call(&with_key(calls_event(&body, Some(CALLS_KEY)), "order-1"))
        .await;
    assert_eq!(retry.status, 201, "{retry:?}");
    assert_eq!(retry.json()["callSid"], first.json()["callSid"]);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(creates(), 1);
    // The key with another request: refused, not silently answered with the first call.
    let other = a
        .call(&with_key(
            calls_event(&json!({"to": "+15005550007"}), Some(CALLS_KEY)),
            "order-1",
        ))
        .await;
    assert_eq!(other.status, 422, "{other:?}");
    assert_eq!(creates(), 1);

    // Concurrent duplicates on two sandboxes while Twilio is slow: the second waits for
    // the first's answer.
    rest.answer_after(Duration::from_millis(800));
    let event = with_key(calls_event(&body, Some(CALLS_KEY)), "order-2");
    let (x, y) = tokio::join!(a.call(&event), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        b.call(&event).await
    });
    assert_eq!((x.status, y.status), (201, 201), "{x:?} {y:?}");
    assert_eq!(x.json()["callSid"], y.json()["callSid"]);
    assert_ne!(x.json()["callSid"], first.json()["callSid"]);
    assert_eq!(creates(), 2);

    // A failed first attempt leaves the key free: the retry places the call.
    rest.answer_after(Duration::ZERO);
    rest.fail_with(Some((503, 20500)));
    let failed = a
        .call(&with_key(calls_event(&body, Some(CALLS_KEY)), "order-3"))
        .await;
    assert!(failed.status >= 500, "{failed:?}");
    rest.fail_with(None);
    let placed = b
        .call(&with_key(calls_event(&body, Some(CALLS_KEY)), "order-3"))
        .await;
    assert_eq!(placed.status, 201, "{placed:?}");
    assert_eq!(placed.header("idempotent-replayed"), None);
    assert_eq!(creates(), 3);
    // Keys are stored hashed: the table holds no client text.
    let keys = moto.table_keys(TABLE).await;
    assert!(keys.iter().all(|k| !k.contains("order-")), "{keys:?}");
}

#[tokio::test]
async fn a_retried_amd_callback_leaves_the_voicemail_once() {
    let (_moto, rest, registry) = with_registry().await;
    let (a, _a) = lambda_for(&rest, &registry).await;
    let (b, _b) = lambda_for(&rest, &registry).await;
    let body = json!({"to": CALLEE, "voicemail": "message", "voicemailMessage": "Please call the clinic back."});
    let resp = a.call(&calls_event(&body, Some(CALLS_KEY))).await;
    assert_eq!(resp.status, 201, "{resp:?}");
    let call_sid = resp.json()["callSid"].as_str().unwrap().to_string();
    let amd_url = rest.requests()[0]
        .field("AsyncAmdStatusCallback")
        .unwrap()
        .to_string();
    let verdict = |token: &str| {
        let mut e = twilio_request(
            &amd_url,
            &[
                ("AccountSid", ACCOUNT_SID),
                ("AnsweredBy", "machine_end_beep"),
                ("CallSid", &call_sid),
            ],
        );
        e["headers"]["i-twilio-idempotency-token"] = token.into();
        e
    };
    let redirects = || rest.requests().iter().filter(|r| !r.created).count();

    // Twilio's first delivery fails on our side (Twilio's REST API is down): not acted on,
    // so its retry must act.
    rest.fail_with(Some((503, 20500)));
    let failed = a.call(&verdict("idem-1")).await;
    assert!(failed.status >= 500, "{failed:?}");
    rest.fail_with(None);
    let first = b.call(&verdict("idem-1")).await;
    assert_eq!(first.json()["action"], "message", "{first:?}");
    assert_eq!(redirects(), 1);
    // The same delivery retried (another sandbox, the same token): answered, not repeated.
    for lambda in [&a, &b] {
        let retry = lambda.call(&verdict("idem-1")).await;
        assert_eq!(
            (retry.status, retry.json()["action"].clone()),
            (200, json!("duplicate"))
        );
    }
    assert_eq!(redirects(), 1, "the voicemail is left once");
    // A different delivery (a new token) is a new event.
    let other = a.call(&verdict("idem-2")).await;
    assert_eq!(other.json()["action"], "message");
    assert_eq!(redirects(), 2);
}

/// A media-ws task of an admission-limited fleet.
async fn limited_task(moto: &lambda_support::Moto, el: &str, rest: &FakeTwilioRest) -> Server {
    let mut env: Vec<(String, String)> = moto.env();
    let base = rest.base_url();
    for (k, v) in [
        ("AGENT", "elevenlabs"),
        ("ELEVENLABS_WS_URL", el),
        ("MEDIA_SHARED_SECRET", SECRET),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", TEST_AUTH_TOKEN),
        ("TWILIO_API_BASE", base.as_str()),
        ("CALL_REGISTRY_TABLE", TABLE),
        ("CALL_REGISTRY_LEASE_SECONDS", "3"),
        ("AGENT_CONCURRENCY_LIMIT", "2"),
    ] {
        env.push((k.into(), v.into()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Server::start(&env).await
}

/// Twilio's voice webhook for a new inbound call `call_sid` on `lambda`: its TwiML.
async fn ring(lambda: &RuntimeApi, call_sid: &str) -> String {
    let url = format!("{API}/twiml");
    let resp = lambda
        .call(&twilio_request(
            &url,
            &[
                ("AccountSid", ACCOUNT_SID),
                ("CallSid", call_sid),
                ("Direction", "inbound"),
                ("From", "+15005550123"),
                ("To", OUR_NUMBER),
            ],
        ))
        .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    resp.body
}

/// The stream the TwiML connects, opened on `task` like Twilio: its agent conversation up.
async fn stream(task: &Server, twiml: &str, call_sid: &str) -> support::Caller {
    let doc = roxmltree::Document::parse(twiml).unwrap();
    let url = doc
        .descendants()
        .find(|n| n.has_tag_name("Stream"))
        .unwrap_or_else(|| panic!("no stream in {twiml}"))
        .attribute("url")
        .unwrap();
    let path = url.strip_prefix(PUBLIC_STREAM).unwrap();
    let caller = support::Caller::new(task.connect(path, &[]).await.unwrap());
    caller.send(connected());
    caller.send(start_with(call_sid, json!({})));
    caller
}

fn sid(n: u8) -> String {
    format!("CA{n:0>32}")
}

#[tokio::test]
async fn the_agent_plan_is_never_oversubscribed_across_tasks_and_the_lambda() {
    let (moto, rest, mut env) = with_registry().await;
    let fake = FakeEl::start(Behaviour::default()).await;
    let el = fake.ws_url();
    let a = limited_task(&moto, &el, &rest).await;
    let mut b = limited_task(&moto, &el, &rest).await;
    env.push(("AGENT_CONCURRENCY_LIMIT".into(), "2".into()));
    let (hangs_up, _l1) = lambda_for(&rest, &env).await;
    env.push(("OVERFLOW_NUMBER".into(), "+15005550999".into()));
    let (dials, _l2) = lambda_for(&rest, &env).await;
    let conversations = |n: usize| {
        let fake = &fake;
        async move {
            fake.wait("conversations", |c| {
                c.iter().filter(|c| c.init.is_some()).count() == n
            })
            .await;
        }
    };

    // Two calls ring, are admitted, and stream on two tasks.
    let first = stream(&a, &ring(&hangs_up, &sid(1)).await, &sid(1)).await;
    let second = stream(&b, &ring(&dials, &sid(2)).await, &sid(2)).await;
    conversations(2).await;

    // The third: overflow TwiML, both variants, and no stream token in either.
    let said = ring(&hangs_up, &sid(3)).await;
    assert_eq!(
        said,
        media_orchestrator::twilio::twiml::say_then_hang_up(
            media_orchestrator::config::env::OVERFLOW_MESSAGE_DEFAULT
        )
    );
    let dialled = ring(&dials, &sid(3)).await;
    let doc = roxmltree::Document::parse(&dialled).unwrap();
    let verbs: Vec<_> = doc
        .root_element()
        .children()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name().to_string())
        .collect();
    assert_eq!(verbs, ["Say", "Dial"], "{dialled}");
    assert!(
        dialled.contains("<Number>+15005550999</Number>"),
        "{dialled}"
    );
    // Outbound at the limit: 429 with Retry-After, and nothing sent to Twilio.
    let resp = hangs_up
        .call(&calls_event(&json!({"to": CALLEE}), Some(CALLS_KEY)))
        .await;
    assert_eq!(resp.status, 429, "{resp:?}");
    assert_eq!(resp.header("retry-after"), Some("30"));
    assert!(rest.requests().iter().all(|r| !r.created));
    // A stream that skipped the webhook is counted too: refused at start on a task.
    let sneaky = support::Caller::new(
        a.connect(
            &format!(
                "/rtm/voice/jwt/{}",
                media_orchestrator::auth::TokenIssuer::new(
                    &media_orchestrator::secret::Secret::new(SECRET.into()),
                    media_orchestrator::auth::Clock::System,
                )
                .mint(Some(&sid(9)), Duration::from_secs(60))
                .unwrap()
                .token
                .expose()
            ),
            &[],
        )
        .await
        .unwrap(),
    );
    sneaky.send(connected());
    sneaky.send(start_with(&sid(9), json!({})));
    let log = sneaky.wait("close", |l| l.close.is_some()).await;
    assert_eq!(log.close, Some((1000, "agent capacity".into())));
    // Bound and with REST: the call was handed to the overflow TwiML, not the apology.
    let redirect = rest
        .requests()
        .into_iter()
        .find(|r| r.call_sid == sid(9))
        .unwrap();
    assert!(
        redirect.field("Twiml").unwrap().contains("<Hangup />")
            || redirect.field("Twiml").unwrap().contains("<Hangup/>"),
        "{redirect:?}"
    );
    assert_eq!(
        a.metric("media_admissions_total{result=\"overflow\"}")
            .await,
        1.0
    );

    // The first call ends: its slot is free at once.
    first.send(stop(10));
    first.wait("close", |l| l.close.is_some()).await;
    let fourth = ring(&hangs_up, &sid(4)).await;
    let _fourth = stream(&a, &fourth, &sid(4)).await;
    conversations(3).await;

    // A task dies mid-call: its slot comes back when the lease runs out (3 s), not before.
    b.signal("KILL");
    b.wait_exit(T).await;
    drop(second);
    assert!(
        ring(&hangs_up, &sid(5)).await.contains("<Hangup"),
        "still held"
    );
    let started = std::time::Instant::now();
    let admitted = loop {
        let twiml = ring(&hangs_up, &sid(5)).await;
        if twiml.contains("<Stream") {
            break twiml;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never freed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let _fifth = stream(&a, &admitted, &sid(5)).await;
    conversations(4).await;
}
