//! The handler called directly with the `events/*.json` fixtures (the Runtime API tests in
//! `tests/it/media_lambda.rs` drive the real binary).

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use super::*;
use crate::auth::JwtVerifier;
use crate::config::ConfigError;
use crate::secrets::SecretSpec;
use crate::twilio::signature::{compute_signature, SignatureAlgorithm};

const NOW: u64 = 1_800_000_000;
pub(super) const AUTH_TOKEN: &str = "test-auth-token-0123456789abcdef";
const CALL_SID: &str = "CAfedcba9876543210fedcba9876543210";

pub(super) fn env(extra: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
    let mut map: HashMap<&str, &str> = [
        ("MINT_API_KEY", "test-mint-api-key"),
        ("MEDIA_SHARED_SECRET", "current-secret,previous-secret"),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("STREAM_URL_BASE", "wss://media.example.com/rtm/voice/"),
    ]
    .into_iter()
    .collect();
    map.extend(extra.iter().copied());
    map
}

pub(super) fn state(extra: &[(&'static str, &'static str)]) -> LambdaState {
    LambdaState::new(
        LambdaConfig::from_source(&env(extra)).unwrap(),
        Clock::Fixed(NOW),
    )
    .unwrap()
}

/// The verbs of a TwiML document, in order.
pub(super) fn verbs(xml: &str) -> Vec<String> {
    roxmltree::Document::parse(xml)
        .unwrap()
        .root_element()
        .children()
        .map(|n| n.tag_name().name().to_string())
        .collect()
}

pub(super) fn event(name: &str) -> Value {
    let path = format!("{}/events/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub(super) fn request(event: &Value) -> Request {
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

pub(super) fn text(resp: &Response<Body>) -> String {
    String::from_utf8(body_bytes_of(resp.body()).to_vec()).unwrap()
}

fn body_bytes_of(body: &Body) -> &[u8] {
    match body {
        Body::Text(s) => s.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    }
}

pub(super) async fn call(
    state: &LambdaState,
    event: &Value,
) -> Result<Response<Body>, LambdaError> {
    handle(state, request(event)).await
}

fn verifier() -> JwtVerifier {
    JwtVerifier::new(
        &[crate::secret::Secret::new("current-secret".to_string())],
        Duration::ZERO,
        Clock::Fixed(NOW),
    )
}

#[test]
fn config_defaults_and_required_variables() {
    let c = LambdaConfig::from_source(&env(&[])).unwrap();
    assert_eq!(c.stream_url_base, "wss://media.example.com/rtm/voice");
    assert_eq!(c.token_ttl, Duration::from_secs(300));
    assert_eq!(c.token_max_ttl, Duration::from_secs(3600));
    assert_eq!(c.twiml_parameters, ["CallSid", "AccountSid", "Direction"]);
    assert_eq!(c.secrets_ttl, Duration::from_secs(300));
    assert_eq!(c.public_webhook_url, None);
    assert_eq!(c.twilio_account_sid, None);
    assert_eq!(c.fallback, crate::twilio::twiml::Fallback::default());

    let c = LambdaConfig::from_source(&env(&[("MINT_API_KEY", "ssm:/media/mint")])).unwrap();
    assert_eq!(c.mint_api_key, SecretSpec::Ssm("/media/mint".into()));

    for var in [
        "MINT_API_KEY",
        "MEDIA_SHARED_SECRET",
        "TWILIO_AUTH_TOKEN",
        "STREAM_URL_BASE",
    ] {
        let mut map = env(&[]);
        map.remove(var);
        let ConfigError::Invalid { var: named, .. } = LambdaConfig::from_source(&map).unwrap_err();
        assert_eq!(named, var);
    }
}

#[test]
fn config_rejects_unusable_values_naming_the_variable() {
    for (var, value) in [
        ("STREAM_URL_BASE", "https://media.example.com"),
        ("STREAM_URL_BASE", "wss://media.example.com/x?y=1"),
        ("STREAM_URL_BASE", "wss:///path"),
        ("PUBLIC_WEBHOOK_URL", "hooks.example.com/twiml"),
        ("FALLBACK_REDIRECT_URL", "/relative"),
        ("TOKEN_TTL_SECONDS", "0"),
        ("TOKEN_TTL_SECONDS", "7200"),
        ("TOKEN_MAX_TTL_SECONDS", "many"),
        ("TWIML_PARAMETERS", "CallSid,CallToken"),
        ("TWIML_PARAMETERS", "Call-Sid"),
        ("MEDIA_SHARED_SECRET", "a,,b"),
        ("MINT_API_KEY", "ssm:"),
        ("SECRETS_TTL_SECONDS", "0"),
        ("LOG_FORMAT", "xml"),
        ("OUTBOUND_FROM", "5551230000"),
        // A From without the REST API (no TWILIO_ACCOUNT_SID) could never place a call.
        ("OUTBOUND_FROM", "+15551230000"),
        ("PUBLIC_API_URL", "http://api.example.com"),
        ("PUBLIC_API_URL", "https://api.example.com/voice?x=1"),
        ("TWILIO_ACCOUNT_SID", "AC123"),
        ("TWILIO_API_BASE", "api.twilio.com"),
        ("OUTBOUND_CONTEXT_TTL_SECONDS", "0"),
    ] {
        let ConfigError::Invalid { var: named, reason } =
            LambdaConfig::from_source(&env(&[(var, value)])).unwrap_err();
        assert_eq!(named, var, "{var}={value}");
        if var == "MEDIA_SHARED_SECRET" {
            assert!(!reason.contains(value), "{reason}");
        }
    }
    let c = LambdaConfig::from_source(&env(&[(
        "TWIML_PARAMETERS",
        " Direction , , CallSid,Direction",
    )]))
    .unwrap();
    assert_eq!(c.twiml_parameters, ["Direction", "CallSid"]);
}

#[tokio::test]
async fn health_and_routing_errors() {
    let s = state(&[]);
    let resp = call(&s, &event("health")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = serde_json::from_str(&text(&resp)).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["service"].as_str()),
        (Some(true), Some(SERVICE))
    );
    humantime::parse_rfc3339(v["time"].as_str().unwrap()).unwrap();

    let mut e = event("health");
    e["rawPath"] = "/nope".into();
    assert!(matches!(call(&s, &e).await, Err(LambdaError::NotFound)));
    let mut e = event("health");
    e["requestContext"]["http"]["method"] = "DELETE".into();
    let err = call(&s, &e).await.unwrap_err();
    assert_eq!(err.status(), 405);
    let resp = err.to_response();
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    assert_eq!(text(&resp), r#"{"error":"method_not_allowed","ok":false}"#);

    // A named stage prefix is not part of the route.
    let mut e = event("health");
    e["rawPath"] = "/prod/health".into();
    e["requestContext"]["stage"] = "prod".into();
    assert_eq!(call(&s, &e).await.unwrap().status(), 200);
}

#[tokio::test]
async fn token_route_mints_what_media_ws_verifies() {
    let s = state(&[("TOKEN_MAX_TTL_SECONDS", "600")]);
    let resp = call(&s, &event("token")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = serde_json::from_str(&text(&resp)).unwrap();
    let token = v["token"].as_str().unwrap();
    assert_eq!(v["expiresAt"], NOW + 120);
    assert_eq!(
        v["streamUrl"],
        format!("wss://media.example.com/rtm/voice/jwt/{token}")
    );
    let claims = verifier().verify(token).unwrap();
    assert_eq!(claims.sub.as_deref(), Some(CALL_SID));
    assert_eq!((claims.iat, claims.exp), (Some(NOW), NOW + 120));

    // ttlSeconds is capped; an unbound token (no callSid) lives at most 60 s, whatever the
    // default or the request says; no body means no sub.
    let mut e = event("token");
    e["body"] = format!(r#"{{"callSid": "{CALL_SID}", "ttlSeconds": 100000}}"#).into();
    let v: Value = serde_json::from_str(&text(&call(&s, &e).await.unwrap())).unwrap();
    assert_eq!(v["expiresAt"], NOW + 600);
    e["body"] = r#"{"ttlSeconds": 100000}"#.into();
    let v: Value = serde_json::from_str(&text(&call(&s, &e).await.unwrap())).unwrap();
    assert_eq!(v["expiresAt"], NOW + 60);
    e.as_object_mut().unwrap().remove("body");
    let v: Value = serde_json::from_str(&text(&call(&s, &e).await.unwrap())).unwrap();
    assert_eq!(v["expiresAt"], NOW + 60);
    assert_eq!(
        verifier().verify(v["token"].as_str().unwrap()).unwrap().sub,
        None
    );

    for (body, code) in [
        ("{not json", "bad_json"),
        (r#"{"ttlSeconds": -5}"#, "bad_json"),
        (r#"{"callSid": 42}"#, "bad_json"),
        (r#"{"ttlSeconds": 0}"#, "invalid_ttl"),
        (r#"{"callSid": "CA<script>"}"#, "invalid_call_sid"),
    ] {
        let mut e = event("token");
        e["body"] = body.into();
        let err = call(&s, &e).await.unwrap_err();
        assert_eq!((err.status().as_u16(), err.code()), (400, code), "{body}");
    }
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic test-mint-api-key"),
        Some("Bearer"),
    ] {
        let mut e = event("token");
        match auth {
            Some(a) => e["headers"]["authorization"] = a.into(),
            None => {
                e["headers"]
                    .as_object_mut()
                    .unwrap()
                    .remove("authorization");
            }
        }
        let err = call(&s, &e).await.unwrap_err();
        assert_eq!(err.status(), 401, "{auth:?}");
        assert_eq!(err.to_response().headers()["www-authenticate"], "Bearer");
    }
    let mut e = event("token");
    e["requestContext"]["http"]["method"] = "GET".into();
    assert_eq!(call(&s, &e).await.unwrap_err().status(), 405);
}

#[test]
fn webhook_url_is_rebuilt_from_host_raw_path_and_raw_query() {
    let mut e = event("twiml");
    assert_eq!(
        webhook_url(&request(&e)).as_deref(),
        Some("https://abc123defg.execute-api.us-east-1.amazonaws.com/twiml")
    );
    e["rawQueryString"] = "a=1&b=%2B2".into();
    e["headers"]["host"] = "hooks.example.com".into();
    assert_eq!(
        webhook_url(&request(&e)).as_deref(),
        Some("https://hooks.example.com/twiml?a=1&b=%2B2")
    );
    e["headers"].as_object_mut().unwrap().remove("host");
    assert_eq!(
        webhook_url(&request(&e)).as_deref(),
        Some("https://abc123defg.execute-api.us-east-1.amazonaws.com/twiml?a=1&b=%2B2")
    );
}

/// Re-signs a webhook event after its body or URL changed (what Twilio would send).
pub(super) fn resign(e: &mut Value, url: &str) {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(e["body"].as_str().unwrap())
        .unwrap();
    let params = crate::twilio::signature::parse_form(&raw);
    e["headers"]["x-twilio-signature"] = compute_signature(
        AUTH_TOKEN.as_bytes(),
        SignatureAlgorithm::HmacSha1,
        url,
        &params,
    )
    .into();
}

pub(super) fn set_form(e: &mut Value, fields: &[(&str, &str)]) {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    e["body"] = base64::engine::general_purpose::STANDARD
        .encode(body)
        .into();
}

const EVENT_URL: &str = "https://abc123defg.execute-api.us-east-1.amazonaws.com/twiml";

#[tokio::test]
async fn twiml_with_the_event_signature_connects_the_stream() {
    let s = state(&[
        ("FALLBACK_SAY", "Sorry, goodbye."),
        (
            "FALLBACK_REDIRECT_URL",
            "https://hooks.example.com/fallback",
        ),
        ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
    ]);
    let resp = call(&s, &event("twiml")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/xml");
    let xml = text(&resp);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let root = doc.root_element();
    let verbs: Vec<&str> = root.children().map(|n| n.tag_name().name()).collect();
    assert_eq!(verbs, ["Connect", "Say", "Redirect"]);
    let stream = root.first_child().unwrap().first_child().unwrap();
    let url = stream.attribute("url").unwrap();
    let token = url
        .strip_prefix("wss://media.example.com/rtm/voice/jwt/")
        .unwrap();
    assert_eq!(
        verifier().verify(token).unwrap().sub.as_deref(),
        Some(CALL_SID)
    );
    let params: Vec<(&str, &str)> = stream
        .children()
        .map(|p| (p.attribute("name").unwrap(), p.attribute("value").unwrap()))
        .collect();
    assert_eq!(
        params,
        [
            ("CallSid", CALL_SID),
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("Direction", "inbound")
        ]
    );
    assert!(
        !xml.contains("+1500555"),
        "no phone numbers unless allow-listed"
    );
}

#[tokio::test]
async fn twiml_refusals() {
    let s = state(&[("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef")]);
    let bad = call(&s, &event("twiml-bad-signature")).await.unwrap_err();
    assert_eq!(
        (bad.status().as_u16(), bad.code()),
        (403, "invalid_signature")
    );

    let mut e = event("twiml");
    e["headers"]
        .as_object_mut()
        .unwrap()
        .remove("x-twilio-signature");
    assert_eq!(call(&s, &e).await.unwrap_err().code(), "invalid_signature");

    // Signed for another URL (a query string the request does not have).
    let mut e = event("twiml");
    resign(&mut e, &format!("{EVENT_URL}?x=1"));
    assert_eq!(call(&s, &e).await.unwrap_err().code(), "invalid_signature");

    let mut e = event("twiml");
    set_form(
        &mut e,
        &[
            ("AccountSid", "ACffffffffffffffffffffffffffffffff"),
            ("CallSid", CALL_SID),
        ],
    );
    resign(&mut e, EVENT_URL);
    let err = call(&s, &e).await.unwrap_err();
    assert_eq!(
        (err.status().as_u16(), err.code()),
        (403, "account_mismatch")
    );

    let mut e = event("twiml");
    set_form(
        &mut e,
        &[("AccountSid", "AC0123456789abcdef0123456789abcdef")],
    );
    resign(&mut e, EVENT_URL);
    assert_eq!(call(&s, &e).await.unwrap_err().code(), "missing_call_sid");

    let mut e = event("twiml");
    e["headers"]["content-type"] = "application/json".into();
    assert_eq!(call(&s, &e).await.unwrap_err().status(), 415);

    let mut e = event("twiml");
    e["requestContext"]["http"]["method"] = "GET".into();
    assert_eq!(call(&s, &e).await.unwrap_err().status(), 405);
}

#[tokio::test]
async fn twiml_uses_the_configured_public_url_and_escapes_hostile_values() {
    let s = state(&[
        (
            "PUBLIC_WEBHOOK_URL",
            "https://hooks.example.com/voice?tenant=a%20b",
        ),
        ("TWIML_PARAMETERS", "CallSid,Direction,CallerName"),
        ("FALLBACK_SAY", "Tom & Jerry <say> \"bye\""),
    ]);
    let hostile = "\"/><Hangup/><Parameter name=\"x\" value=\"&amp;\n\r\t'\u{1}";
    let mut e = event("twiml");
    set_form(
        &mut e,
        &[
            ("CallSid", CALL_SID),
            ("Direction", hostile),
            ("CallerName", "<Play>x</Play>"),
        ],
    );
    resign(&mut e, "https://hooks.example.com/voice?tenant=a%20b");
    let resp = call(&s, &e).await.unwrap();
    let xml = text(&resp);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let verbs: Vec<&str> = doc
        .root_element()
        .children()
        .map(|n| n.tag_name().name())
        .collect();
    assert_eq!(verbs, ["Connect", "Say"], "{xml}");
    assert!(doc
        .descendants()
        .all(|n| n.tag_name().name() != "Hangup" && n.tag_name().name() != "Play"));
    let stream = doc
        .descendants()
        .find(|n| n.has_tag_name("Stream"))
        .unwrap();
    let values: Vec<&str> = stream
        .children()
        .map(|p| p.attribute("value").unwrap())
        .collect();
    // Control characters XML cannot carry are dropped; everything else survives exactly.
    assert_eq!(
        values,
        [CALL_SID, &hostile.replace('\u{1}', ""), "<Play>x</Play>"]
    );
    let say = doc.descendants().find(|n| n.has_tag_name("Say")).unwrap();
    assert_eq!(say.text(), Some("Tom & Jerry <say> \"bye\""));

    // The same request against the rebuilt URL does not verify: the configured one is used.
    let mut e2 = e.clone();
    resign(&mut e2, EVENT_URL);
    assert_eq!(call(&s, &e2).await.unwrap_err().code(), "invalid_signature");
}

/// Every form-POST signature vector (HMAC-SHA1, http(s) URL) through the handler: the
/// signature check passes exactly when the vector says it should.
#[tokio::test]
async fn signature_vectors_through_the_handler() {
    let vectors: Value =
        serde_json::from_str(include_str!("../../tests/fixtures/twilio-signature.json")).unwrap();
    let mut checked = 0;
    for case in vectors["cases"].as_array().unwrap() {
        let url = case["validate_url"].as_str().unwrap();
        let sha1 = case["presented_signature"].as_str().unwrap().len() == 28;
        let json_body = case["content_type"]
            .as_str()
            .is_some_and(|c| c.contains("json"));
        if !url.starts_with("http") || !sha1 || json_body {
            continue;
        }
        let pairs: Vec<(String, String)> = case["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
            .collect();
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&pairs)
            .finish();
        let mut e = event("twiml");
        e["body"] = body.into();
        e["isBase64Encoded"] = false.into();
        e["headers"]["x-twilio-signature"] = case["presented_signature"].clone();
        let token: &'static str = Box::leak(case["auth_token"].as_str().unwrap().into());
        let url: &'static str = Box::leak(url.into());
        let s = state(&[("TWILIO_AUTH_TOKEN", token), ("PUBLIC_WEBHOOK_URL", url)]);
        let passed = match call(&s, &e).await {
            Ok(_) => true,
            Err(err) => err.code() != "invalid_signature",
        };
        assert_eq!(passed, case["validate_result"] == true, "{}", case["id"]);
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} vectors applied");
}

/// Every API Gateway front door: the route matches and the signed URL is the one Twilio
/// called (each event is signed over its own public URL, as Twilio would).
#[tokio::test]
async fn twiml_behind_every_api_gateway_front_door() {
    let s = state(&[]);
    for (name, url) in [
        ("twiml", EVENT_URL),
        (
            "twiml-http-stage",
            "https://abc123defg.execute-api.us-east-1.amazonaws.com/prod/twiml",
        ),
        ("twiml-custom-domain", "https://api.example.com/voice/twiml"),
        (
            "twiml-rest",
            "https://abc123defg.execute-api.us-east-1.amazonaws.com/prod/twiml",
        ),
        (
            "twiml-rest-custom-domain",
            "https://api.example.com/voice/twiml",
        ),
    ] {
        let e = event(name);
        assert_eq!(webhook_url(&request(&e)).as_deref(), Some(url), "{name}");
        let resp = call(&s, &e)
            .await
            .unwrap_or_else(|err| panic!("{name}: {err:?}"));
        assert_eq!(resp.status(), 200, "{name}");
        assert!(
            text(&resp).contains("<Connect><Stream url=\"wss://media.example.com/rtm/voice/jwt/"),
            "{name}"
        );

        // The same request signed over the URL without the prefix (what the old code
        // checked) is refused: the signature really covers the prefix.
        let mut bare = e.clone();
        let host = url.split('/').nth(2).unwrap();
        resign_any(&mut bare, &format!("https://{host}/twiml"));
        if url != format!("https://{host}/twiml") {
            assert!(
                matches!(call(&s, &bare).await, Err(LambdaError::BadSignature)),
                "{name}"
            );
        }
    }
}

/// Re-signs a 1.0 or 2.0 event for `url`.
fn resign_any(e: &mut Value, url: &str) {
    if e["version"] == "2.0" {
        resign(e, url);
        return;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(e["body"].as_str().unwrap())
        .unwrap();
    let params = crate::twilio::signature::parse_form(&raw);
    let sig = compute_signature(
        AUTH_TOKEN.as_bytes(),
        SignatureAlgorithm::HmacSha1,
        url,
        &params,
    );
    e["headers"]["X-Twilio-Signature"] = sig.clone().into();
    e["multiValueHeaders"]["X-Twilio-Signature"] = serde_json::json!([sig]);
}

#[tokio::test]
async fn every_route_matches_behind_stages_and_base_paths() {
    let s = state(&[]);
    assert_eq!(route_of("/health"), "/health");
    assert_eq!(route_of("/prod/health"), "/health");
    assert_eq!(route_of("/voice/prod/token/"), "/token");
    assert_eq!(route_of("/twimlx"), "");
    assert_eq!(route_of("/"), "");
    assert_eq!(route_of(""), "");
    for path in [
        "/health",
        "/prod/health",
        "/voice/health",
        "/voice/v1/health",
    ] {
        let mut e = event("health");
        e["rawPath"] = path.into();
        assert_eq!(call(&s, &e).await.unwrap().status(), 200, "{path}");
    }
    // REST API (1.0): the resource path, with the custom domain's base path in `path`.
    let mut e = event("twiml-rest-custom-domain");
    e["path"] = "/voice/health".into();
    e["resource"] = "/health".into();
    e["httpMethod"] = "GET".into();
    e["requestContext"]["path"] = "/voice/health".into();
    assert_eq!(call(&s, &e).await.unwrap().status(), 200);
    for path in ["/nope", "/prod/nope", "/voice/healthz"] {
        let mut e = event("health");
        e["rawPath"] = path.into();
        assert!(
            matches!(call(&s, &e).await, Err(LambdaError::NotFound)),
            "{path}"
        );
    }
}

#[tokio::test]
async fn webhooks_signed_with_the_previous_auth_token_pass_during_a_rotation() {
    // Twilio promoted its secondary token: the new one first, the one the event was signed
    // with second.
    let rotating = state(&[(
        "TWILIO_AUTH_TOKEN",
        "rotated-new-token-0000000000000,test-auth-token-0123456789abcdef",
    )]);
    let resp = call(&rotating, &event("twiml")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let rotated = state(&[("TWILIO_AUTH_TOKEN", "rotated-new-token-0000000000000")]);
    assert!(matches!(
        call(&rotated, &event("twiml")).await,
        Err(LambdaError::BadSignature)
    ));
}

#[tokio::test]
async fn a_twiml_webhook_that_fails_inside_answers_a_fallback_twilio_can_play() {
    // The signing secret cannot be read (an SSM reference never loaded): a 5xx inside.
    let broken = state(&[("MEDIA_SHARED_SECRET", "ssm:/media/never-loaded")]);
    assert!(call(&broken, &event("twiml"))
        .await
        .unwrap_err()
        .is_internal());
    let resp = respond(&broken, request(&event("twiml"))).await;
    assert_eq!(resp.status(), 200, "Twilio plays a 200's TwiML, not a 5xx");
    assert_eq!(resp.headers()["content-type"], "text/xml");
    let xml = text(&resp);
    assert_eq!(verbs(&xml), ["Say", "Hangup"], "{xml}");
    assert!(xml.contains("Sorry, we cannot take your call right now"));
    let with_say = state(&[
        ("MEDIA_SHARED_SECRET", "ssm:/media/never-loaded"),
        ("FALLBACK_SAY", "Please call the front desk."),
    ]);
    let resp = respond(&with_say, request(&event("twiml"))).await;
    assert!(text(&resp).contains("<Say>Please call the front desk.</Say>"));
    // A JSON route keeps its JSON error.
    let resp = respond(&broken, request(&event("token"))).await;
    assert!(resp.status().is_server_error());
}
