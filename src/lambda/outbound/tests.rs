//! The outbound routes called directly with the `events/calls*.json` fixtures; creating
//! calls and the AMD actions against a fake Twilio REST API are in `tests/it/outbound.rs`.

use serde_json::{json, Value};

use super::super::tests::{call, event, resign, set_form, state, text};
use super::request::is_language;
use super::*;
use crate::auth::{Clock, JwtVerifier};
use crate::context::AgentOverrides;
use crate::secret::Secret;

/// The secret the events' contexts are sealed with (events/README.md).
const EVENTS_SECRET: &[(&str, &str)] = &[("MEDIA_SHARED_SECRET", "local-dev-secret")];
const EVENT_SID: &str = "CA0a1b2c3d4e5f60718293a4b5c6d7e8f9";

/// Outbound on: REST (unreachable: a refusal is decided before any request), the calls key
/// of events/calls.json, and an allowlist of the test numbers.
const OUTBOUND: &[(&str, &str)] = &[
    ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
    ("TWILIO_API_BASE", "http://127.0.0.1:9"),
    ("CALLS_API_KEY", "test-calls-api-key"),
    ("OUTBOUND_ALLOWLIST", "+1500555*"),
];

fn calls_event(body: &Value) -> Value {
    let mut e = event("calls");
    e["body"] = body.to_string().into();
    // No registry here: idempotency is tested in tests/it/outbound.rs.
    if let Some(h) = e["headers"].as_object_mut() {
        h.remove("idempotency-key");
    }
    e
}

async fn refusal(body: Value) -> (u16, Value) {
    // REST configured, so a refusal here is validation, before any Twilio request.
    let s = state(OUTBOUND);
    let e = call(&s, &calls_event(&body)).await.unwrap_err();
    let resp = e.to_response();
    (
        resp.status().as_u16(),
        serde_json::from_str(&text(&resp)).unwrap(),
    )
}

#[tokio::test]
async fn bad_call_requests_get_a_400_with_a_reason_that_quotes_no_value() {
    let cases = [
        (json!({"to": "5551234"}), "to must be an E.164"),
        (json!({"to": "+15005550006"}), "from is required"),
        (
            json!({"to": "+15005550006", "from": "+1 500"}),
            "from must be",
        ),
        (
            json!({"to": "+15005550006", "from": "+15005550001", "prompT": "x"}),
            "unknown",
        ),
        (json!({"from": "+15005550001"}), "to is required"),
        (
            json!({"to": "+15005550006", "from": "+15005550001", "dynamicVariables": {"a b": "x"}}),
            "names are",
        ),
        (
            json!({"to": "+15005550006", "from": "+15005550001", "dynamicVariables": {"system__call_sid": "x"}}),
            "reserved",
        ),
        (
            json!({"to": "+15005550006", "from": "+15005550001", "dynamicVariables": {"n": 3}}),
            "wrong type",
        ),
        (
            json!({"to": "+15005550006", "from": "+15005550001", "dynamicVariables": {"n": "v".repeat(513)}}),
            "512",
        ),
        (
            json!({"to": "+15005550006", "from": "+15005550001", "prompt": "p".repeat(1501)}),
            "prompt is at most",
        ),
        (
            json!({"to": "+15005550006", "from": "+15005550001", "language": "english!"}),
            "language",
        ),
        (
            json!({"to": "+15005550006", "from": "+15005550001", "voiceId": "../x"}),
            "voiceId",
        ),
        (
            json!({"to": "+15005550006", "from": "+15005550001", "voicemail": "message"}),
            "needs voicemailMessage",
        ),
        (
            json!({"to": "+15005550006", "from": "+15005550001", "voicemailMessage": "hi"}),
            "needs voicemail",
        ),
        (
            json!({"to": "+15005550006", "from": "+15005550001", "voicemail": "shout"}),
            "wrong type",
        ),
        (
            json!({"to": "+15005550006", "from": "+15005550001", "prompt": "p".repeat(1400),
                   "firstMessage": "f".repeat(900)}),
            "too large",
        ),
    ];
    for (body, reason) in cases {
        let (status, v) = refusal(body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(v["error"], "invalid_request", "{body}");
        let said = v["reason"].as_str().unwrap();
        assert!(said.contains(reason), "{body}: {said}");
        assert!(
            !said.contains("5551234") && !said.contains("english"),
            "{said}"
        );
    }
    let (status, v) = refusal(json!("not an object")).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test]
async fn without_the_calls_key_or_outside_the_allowlist_no_call_is_placed() {
    // No CALLS_API_KEY: outbound calls are off, whatever the request holds.
    let e = call(&state(&[]), &event("calls")).await.unwrap_err();
    assert!(matches!(e, LambdaError::OutboundNotConfigured), "{e:?}");
    assert_eq!(e.status(), 501);

    let s = state(OUTBOUND);
    let mut e = event("calls");
    e["headers"]["authorization"] = "Bearer wrong".into();
    assert!(matches!(call(&s, &e).await, Err(LambdaError::Unauthorized)));
    // The key that mints stream tokens cannot dial.
    e["headers"]["authorization"] = "Bearer test-mint-api-key".into();
    assert!(matches!(call(&s, &e).await, Err(LambdaError::Unauthorized)));
    e["headers"]
        .as_object_mut()
        .unwrap()
        .remove("authorization");
    assert!(matches!(call(&s, &e).await, Err(LambdaError::Unauthorized)));

    // A premium number abroad: 403 with a constant reason, and no request to Twilio (which
    // is unreachable here: trying would have been a 5xx).
    let e = call(
        &s,
        &calls_event(&json!({"to": "+882345678901", "from": "+15005550001"})),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, LambdaError::DestinationNotAllowed), "{e:?}");
    let resp = e.to_response();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        text(&resp),
        r#"{"error":"destination_not_allowed","ok":false}"#
    );
}

#[test]
fn the_calls_key_needs_rest_and_an_allowlist() {
    use crate::lambda::LambdaConfig;
    let without_list: Vec<_> = OUTBOUND
        .iter()
        .copied()
        .filter(|(k, _)| *k != "OUTBOUND_ALLOWLIST")
        .collect();
    let err = LambdaConfig::from_source(&super::super::tests::env(&without_list))
        .unwrap_err()
        .to_string();
    assert!(err.contains("OUTBOUND_ALLOWLIST"), "{err}");
    let err = LambdaConfig::from_source(&super::super::tests::env(&[("CALLS_API_KEY", "k")]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("CALLS_API_KEY") && err.contains("REST"),
        "{err}"
    );
    let err = LambdaConfig::from_source(&super::super::tests::env(&[
        ("CALLS_API_KEY", "k"),
        ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
        ("OUTBOUND_ALLOWLIST", "premium"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(err.contains("OUTBOUND_ALLOWLIST"), "{err}");
}

#[tokio::test]
async fn the_answered_call_gets_a_stream_whose_token_carries_the_sealed_context() {
    let s = state(EVENTS_SECRET);
    let resp = call(&s, &event("calls-answer")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let xml = text(&resp);
    for clear in ["Ada", "patient_first_name", "clinic", "Tuesday"] {
        assert!(!xml.contains(clear), "{clear} in clear in the TwiML");
    }
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let stream = doc
        .descendants()
        .find(|n| n.has_tag_name("Stream"))
        .unwrap();
    let token = stream
        .attribute("url")
        .unwrap()
        .strip_prefix("wss://media.example.com/rtm/voice/jwt/")
        .unwrap();
    let verifier = JwtVerifier::new(
        &[Secret::new("local-dev-secret".to_string())],
        std::time::Duration::ZERO,
        Clock::Fixed(1_800_000_000),
    );
    let claims = verifier.verify(token).unwrap();
    assert_eq!(claims.sub.as_deref(), Some(EVENT_SID));
    let context = claims.context.unwrap();
    assert_eq!(context.dynamic_variables["patient_first_name"], "Ada");
    assert_eq!(context.overrides.language.as_deref(), Some("en"));
    assert!(context
        .overrides
        .first_message
        .unwrap()
        .starts_with("Hi Ada"));
    let direction = stream
        .children()
        .find(|p| p.attribute("name") == Some("Direction"))
        .and_then(|p| p.attribute("value"));
    assert_eq!(direction, Some("outbound-api"));
}

#[tokio::test]
async fn answer_and_amd_refuse_bad_signatures_and_altered_contexts() {
    let s = state(EVENTS_SECRET);
    for name in ["calls-answer", "calls-amd"] {
        let mut bad = event(name);
        bad["headers"]["x-twilio-signature"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
        assert!(
            matches!(call(&s, &bad).await, Err(LambdaError::BadSignature)),
            "{name}"
        );

        // Another ctx, correctly signed by Twilio: still refused (Twilio signs whatever URL
        // it was given; only we can seal).
        let mut altered = event(name);
        let query = altered["rawQueryString"].as_str().unwrap().to_string();
        let flipped = format!("{}A", &query[..query.len() - 1]);
        let flipped = if flipped == query {
            format!("{}B", &query[..query.len() - 1])
        } else {
            flipped
        };
        altered["rawQueryString"] = flipped.clone().into();
        let route = altered["rawPath"].as_str().unwrap().to_string();
        let url =
            format!("https://abc123defg.execute-api.us-east-1.amazonaws.com{route}?{flipped}");
        resign(&mut altered, &url);
        let e = call(&s, &altered).await.unwrap_err();
        assert!(
            matches!(e, LambdaError::InvalidContext("invalid")),
            "{name}: {e:?}"
        );
        assert_eq!(e.status(), 403);

        // The other route's context is not accepted here.
        let mut swapped = event(name);
        let other = if name == "calls-answer" {
            "calls-amd"
        } else {
            "calls-answer"
        };
        let q = event(other)["rawQueryString"].clone();
        swapped["rawQueryString"] = q.clone();
        let url = format!(
            "https://abc123defg.execute-api.us-east-1.amazonaws.com{route}?{}",
            q.as_str().unwrap()
        );
        resign(&mut swapped, &url);
        assert!(
            matches!(
                call(&s, &swapped).await,
                Err(LambdaError::InvalidContext(_))
            ),
            "{name}"
        );

        let mut missing = event(name);
        missing["rawQueryString"] = "".into();
        let url = format!("https://abc123defg.execute-api.us-east-1.amazonaws.com{route}");
        resign(&mut missing, &url);
        assert!(matches!(
            call(&s, &missing).await,
            Err(LambdaError::InvalidContext("missing"))
        ));
    }
    // Sealed with another secret.
    let other = state(&[("MEDIA_SHARED_SECRET", "another-secret")]);
    assert!(matches!(
        call(&other, &event("calls-answer")).await,
        Err(LambdaError::InvalidContext(_))
    ));
}

#[tokio::test]
async fn a_human_or_unknown_verdict_leaves_the_call_alone() {
    // No REST configured: any Twilio request would fail the test with 501.
    let s = state(EVENTS_SECRET);
    let resp = call(&s, &event("calls-amd-human")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        serde_json::from_str::<Value>(&text(&resp)).unwrap()["action"],
        "none"
    );
    for verdict in ["unknown", "machine_start", "something_new"] {
        let mut e = event("calls-amd-human");
        set_form(
            &mut e,
            &[
                ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
                ("AnsweredBy", verdict),
                ("CallSid", EVENT_SID),
            ],
        );
        let url = format!(
            "https://abc123defg.execute-api.us-east-1.amazonaws.com/calls/amd?{}",
            e["rawQueryString"].as_str().unwrap()
        );
        resign(&mut e, &url);
        let resp = call(&s, &e).await.unwrap();
        assert_eq!(resp.status(), 200, "{verdict}");
    }
    // A machine without REST: the action cannot run, and says so.
    let e = call(&s, &event("calls-amd")).await.unwrap_err();
    assert!(matches!(e, LambdaError::OutboundNotConfigured));
}

#[tokio::test]
async fn the_status_callback_is_signed_and_answered() {
    let s = state(&[]);
    let resp = call(&s, &event("calls-status")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut forged = event("calls-status");
    forged["headers"]["x-twilio-signature"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    assert!(matches!(
        call(&s, &forged).await,
        Err(LambdaError::BadSignature)
    ));
}

#[test]
fn verdicts_and_language_codes() {
    for machine in [
        "machine_end_beep",
        "machine_end_silence",
        "machine_end_other",
        "fax",
    ] {
        assert_eq!(Verdict::of(machine), Verdict::Machine);
    }
    for person in ["human", "unknown", "machine_start", ""] {
        assert_eq!(Verdict::of(person), Verdict::Person);
    }
    for ok in ["en", "pt-br", "zh", "cy", "tl"] {
        assert!(is_language(ok), "{ok}");
    }
    // Well-formed codes ElevenLabs' agents refuse are refused too, before Twilio dials.
    for bad in [
        "", "e", "english", "en-", "en-us", "pt-pt", "EN", "fil", "xx", "e1",
    ] {
        assert!(!is_language(bad), "{bad}");
    }
}

#[test]
fn the_largest_context_accepted_still_fits_the_stream_url() {
    // The biggest context /calls accepts seals to at most MAX_SEALED_CHARS; sealed again in
    // the stream token, the <Stream url> must stay under Twilio's 4000-character limit.
    let secret = Secret::new("current-secret".to_string());
    let sealer = Sealer::new(std::slice::from_ref(&secret));
    let mut prompt = String::new();
    let context = loop {
        prompt.push_str("word ");
        let context = CallContext {
            overrides: AgentOverrides {
                prompt: Some(prompt.clone()),
                ..AgentOverrides::default()
            },
            ..CallContext::default()
        };
        let sealed = sealer
            .seal(Audience::Answer, "", u64::MAX, &context)
            .unwrap();
        if sealed.len() + 7 > MAX_SEALED_CHARS {
            break context;
        }
    };
    let issuer = crate::auth::TokenIssuer::new(&secret, Clock::Fixed(1_800_000_000));
    let token = issuer
        .mint_with_context(EVENT_SID, std::time::Duration::from_secs(3600), &context)
        .unwrap();
    let url = format!(
        "wss://media-orchestrator.eu-central-1.example.com/rtm/voice/jwt/{}",
        token.token.expose()
    );
    assert!(url.len() < 4000, "{}", url.len());
    let verifier = JwtVerifier::new(
        &[secret],
        std::time::Duration::ZERO,
        Clock::Fixed(1_800_000_000),
    );
    assert_eq!(
        verifier.verify(token.token.expose()).unwrap().context,
        Some(context)
    );
}
