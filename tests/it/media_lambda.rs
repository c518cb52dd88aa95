//! `media-lambda` end to end: the real binary against a Lambda Runtime API on loopback, fed the
//! `events/*.json` files and variants; secrets from moto's SSM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use media_test_support::lambda as lambda_support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_support::*;
use media_orchestrator::auth::{Clock, JwtVerifier};
use media_orchestrator::secret::Secret;
use serde_json::{json, Value};

const SHARED_SECRET: &str = "shared-secret-MARKER-7f3a";
const STREAM_URL_BASE: &str = "wss://media.example.com/rtm/voice";
const PHONE_MARKER: &str = "+1555MARKER0100";
const NAME_MARKER: &str = "CALLERNAME-MARKER";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn verifier(secret: &str) -> JwtVerifier {
    JwtVerifier::new(
        &[Secret::new(secret.to_string())],
        Duration::ZERO,
        Clock::System,
    )
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn base_env() -> Vec<(String, String)> {
    owned(&[
        ("MINT_API_KEY", TEST_MINT_API_KEY),
        ("MEDIA_SHARED_SECRET", SHARED_SECRET),
        ("TWILIO_AUTH_TOKEN", TEST_AUTH_TOKEN),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("STREAM_URL_BASE", STREAM_URL_BASE),
        ("TOKEN_MAX_TTL_SECONDS", "600"),
        ("TWIML_PARAMETERS", "CallSid,Direction,CallerName"),
        ("FALLBACK_SAY", "Sorry, we cannot connect you. Goodbye."),
        (
            "FALLBACK_REDIRECT_URL",
            "https://hooks.example.com/fallback?x=1&y=2",
        ),
    ])
}

fn token_event(auth: Option<&str>, body: Option<&str>) -> Value {
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
    match body {
        Some(b) => e["body"] = b.into(),
        None => {
            e.as_object_mut().unwrap().remove("body");
        }
    }
    e
}

fn assert_error(resp: &HttpResponse, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.json(), json!({"ok": false, "error": code}));
}

/// Parses `<Response>`: (verbs, stream url, parameters).
fn parse_twiml(xml: &str) -> (Vec<String>, String, Vec<(String, String)>) {
    let doc = roxmltree::Document::parse(xml).unwrap();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "Response");
    let verbs = root
        .children()
        .filter(roxmltree::Node::is_element)
        .map(|n| n.tag_name().name().to_string())
        .collect();
    let stream = doc
        .descendants()
        .find(|n| n.has_tag_name("Stream"))
        .unwrap();
    assert_eq!(stream.parent().unwrap().tag_name().name(), "Connect");
    let params = stream
        .children()
        .filter(roxmltree::Node::is_element)
        .map(|p| {
            assert_eq!(p.tag_name().name(), "Parameter");
            (
                p.attribute("name").unwrap().to_string(),
                p.attribute("value").unwrap().to_string(),
            )
        })
        .collect();
    (verbs, stream.attribute("url").unwrap().to_string(), params)
}

#[tokio::test]
async fn every_route_and_error_through_the_runtime_api() {
    let api = RuntimeApi::start().await;
    let mut lambda = LambdaProcess::start(&api, &base_env());
    api.wait_ready(Duration::from_secs(20)).await;
    let mut issued_tokens = Vec::new();

    // GET /health
    let resp = api.call(&event("health")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let v = resp.json();
    assert_eq!(
        (v["ok"].as_bool(), v["service"].as_str()),
        (Some(true), Some("media-lambda"))
    );
    humantime::parse_rfc3339(v["time"].as_str().unwrap()).unwrap();

    // POST /token, as in the event file: bound to the CallSid, 120 s.
    let resp = api.call(&event("token")).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let v = resp.json();
    let token = v["token"].as_str().unwrap().to_string();
    let claims = verifier(SHARED_SECRET).verify(&token).unwrap();
    assert_eq!(claims.sub.as_deref(), Some(CALL_SID));
    assert_eq!(claims.aud, "media");
    assert_eq!(claims.exp - claims.iat.unwrap(), 120);
    assert!(claims.jti.is_some());
    assert_eq!(v["expiresAt"], claims.exp);
    assert!(claims.exp.abs_diff(now() + 120) <= 2);
    assert_eq!(v["streamUrl"], format!("{STREAM_URL_BASE}/jwt/{token}"));
    issued_tokens.push(token);

    // ttlSeconds is capped by TOKEN_MAX_TTL_SECONDS; a token bound to no call (no callSid,
    // or no body at all) lives at most 60 s whatever was asked.
    let bearer = format!("Bearer {TEST_MINT_API_KEY}");
    let resp = api
        .call(&token_event(
            Some(&bearer),
            Some(&format!(
                r#"{{"callSid": "{CALL_SID}", "ttlSeconds": 86400}}"#
            )),
        ))
        .await;
    let token = resp.json()["token"].as_str().unwrap().to_string();
    let claims = verifier(SHARED_SECRET).verify(&token).unwrap();
    assert_eq!(claims.exp - claims.iat.unwrap(), 600);
    issued_tokens.push(token);
    let resp = api
        .call(&token_event(
            Some(&bearer),
            Some(r#"{"ttlSeconds": 86400}"#),
        ))
        .await;
    let token = resp.json()["token"].as_str().unwrap().to_string();
    let claims = verifier(SHARED_SECRET).verify(&token).unwrap();
    assert_eq!(claims.exp - claims.iat.unwrap(), 60);
    assert_eq!(claims.sub, None);
    issued_tokens.push(token);
    let resp = api.call(&token_event(Some(&bearer), None)).await;
    let token = resp.json()["token"].as_str().unwrap().to_string();
    let claims = verifier(SHARED_SECRET).verify(&token).unwrap();
    assert_eq!(claims.exp - claims.iat.unwrap(), 60);
    issued_tokens.push(token);

    // Client errors.
    let mut e = event("health");
    e["rawPath"] = "/admin".into();
    e["requestContext"]["http"]["path"] = "/admin".into();
    assert_error(&api.call(&e).await, 404, "not_found");
    let mut e = event("token");
    e["requestContext"]["http"]["method"] = "GET".into();
    let resp = api.call(&e).await;
    assert_error(&resp, 405, "method_not_allowed");
    assert_eq!(resp.header("allow"), Some("POST"));
    assert_error(
        &api.call(&token_event(Some(&bearer), Some("{\"callSid\": ")))
            .await,
        400,
        "bad_json",
    );
    assert_error(
        &api.call(&token_event(
            Some(&bearer),
            Some(r#"{"callSid": "+15551234567"}"#),
        ))
        .await,
        400,
        "invalid_call_sid",
    );
    for auth in [None, Some("Bearer not-the-key"), Some("test-mint-api-key")] {
        let resp = api.call(&token_event(auth, Some("{}"))).await;
        assert_error(&resp, 401, "unauthorized");
        assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
    }

    // POST /twiml, as in the event file (signed with the documented test token).
    let resp = api.call(&event("twiml")).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("text/xml"));
    let (verbs, url, params) = parse_twiml(&resp.body);
    assert_eq!(verbs, ["Connect", "Say", "Redirect"]);
    let token = url
        .strip_prefix(&format!("{STREAM_URL_BASE}/jwt/"))
        .unwrap()
        .to_string();
    let claims = verifier(SHARED_SECRET).verify(&token).unwrap();
    assert_eq!(claims.sub.as_deref(), Some(CALL_SID));
    assert_eq!(
        params,
        owned(&[("CallSid", CALL_SID), ("Direction", "inbound")])
    );
    assert_eq!(
        resp.body.matches(&token).count(),
        1,
        "the token is only in the url"
    );
    issued_tokens.push(token);

    assert_error(
        &api.call(&event("twiml-bad-signature")).await,
        403,
        "invalid_signature",
    );
    let mut e = event("twiml");
    sign_form(
        &mut e,
        &[
            ("AccountSid", "ACffffffffffffffffffffffffffffffff"),
            ("CallSid", CALL_SID),
        ],
        EVENT_URL,
        TEST_AUTH_TOKEN,
    );
    assert_error(&api.call(&e).await, 403, "account_mismatch");
    let mut e = event("twiml");
    sign_form(
        &mut e,
        &[("AccountSid", ACCOUNT_SID), ("From", PHONE_MARKER)],
        EVENT_URL,
        TEST_AUTH_TOKEN,
    );
    assert_error(&api.call(&e).await, 400, "missing_call_sid");
    let mut e = event("twiml");
    sign_form(
        &mut e,
        &[("AccountSid", ACCOUNT_SID), ("CallSid", CALL_SID)],
        EVENT_URL,
        "another-token",
    );
    assert_error(&api.call(&e).await, 403, "invalid_signature");

    // Hostile values are escaped: no injected verbs, values survive as text.
    let hostile = format!("\"/></Stream></Connect><Hangup/><Say>{NAME_MARKER}</Say><!--&amp;'");
    let mut e = event("twiml");
    sign_form(
        &mut e,
        &[
            ("AccountSid", ACCOUNT_SID),
            ("CallSid", CALL_SID),
            ("Direction", "inbound<Play>http://evil/</Play>"),
            ("CallerName", &hostile),
            ("From", PHONE_MARKER),
            ("To", PHONE_MARKER),
            ("Caller", PHONE_MARKER),
        ],
        EVENT_URL,
        TEST_AUTH_TOKEN,
    );
    let resp = api.call(&e).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let (verbs, url, params) = parse_twiml(&resp.body);
    assert_eq!(verbs, ["Connect", "Say", "Redirect"], "{}", resp.body);
    assert_eq!(
        params,
        owned(&[
            ("CallSid", CALL_SID),
            ("Direction", "inbound<Play>http://evil/</Play>"),
            ("CallerName", &hostile),
        ])
    );
    assert!(
        !resp.body.contains(PHONE_MARKER),
        "phone numbers are not allow-listed"
    );
    issued_tokens.push(url.rsplit('/').next().unwrap().to_string());

    // Still serving, and nothing secret or caller-provided reached the logs.
    assert!(lambda.is_running());
    let logs = lambda.logs();
    assert!(logs.contains("stream twiml issued"), "{logs}");
    for marker in [
        TEST_MINT_API_KEY,
        SHARED_SECRET,
        TEST_AUTH_TOKEN,
        PHONE_MARKER,
        "1555MARKER",
        NAME_MARKER,
        "not-the-key",
        "evil",
    ] {
        assert!(!logs.contains(marker), "log leaked {marker:?}:\n{logs}");
    }
    for token in &issued_tokens {
        assert!(
            !logs.contains(token.as_str()),
            "log leaked a token:\n{logs}"
        );
        let signature = token.rsplit('.').next().unwrap();
        assert!(!logs.contains(signature), "log leaked a token signature");
    }
}

/// The webhook behind every API Gateway front door, through the real binary and the Runtime
/// API: each event is signed over the URL Twilio called there (stage, base path included).
#[tokio::test]
async fn the_webhook_behind_every_api_gateway_front_door() {
    let api = RuntimeApi::start().await;
    let _lambda = LambdaProcess::start(&api, &base_env());
    api.wait_ready(Duration::from_secs(20)).await;
    for name in [
        "twiml",
        "twiml-http-stage",
        "twiml-custom-domain",
        "twiml-rest",
        "twiml-rest-custom-domain",
    ] {
        let resp = api.call(&event(name)).await;
        assert_eq!(resp.status, 200, "{name}: {resp:?}");
        assert!(
            resp.body
                .contains(&format!("<Connect><Stream url=\"{STREAM_URL_BASE}/jwt/")),
            "{name}: {}",
            resp.body
        );
    }
    for path in ["/prod/health", "/voice/health"] {
        let mut e = event("health");
        e["rawPath"] = path.into();
        assert_eq!(api.call(&e).await.status, 200, "{path}");
    }
}

#[tokio::test]
async fn bad_config_exits_before_serving() {
    let api = RuntimeApi::start().await;
    let mut env = base_env();
    env.retain(|(k, _)| k != "STREAM_URL_BASE");
    let mut lambda = LambdaProcess::start(&api, &env);
    assert_eq!(lambda.wait_exit(Duration::from_secs(20)).await, Some(2));
    let stderr = lambda.stderr();
    assert!(stderr.contains("STREAM_URL_BASE"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(api.first_next().is_none(), "never asked for an event");

    let mut env = base_env();
    env.push(("MEDIA_SHARED_SECRET".into(), format!("{SHARED_SECRET},,")));
    let mut lambda = LambdaProcess::start(&api, &env);
    assert_eq!(lambda.wait_exit(Duration::from_secs(20)).await, Some(2));
    assert!(lambda.stderr().contains("MEDIA_SHARED_SECRET"));
    assert!(!lambda.logs().contains(SHARED_SECRET));
}

fn ssm_env(moto: &Moto, prefix: &str) -> Vec<(String, String)> {
    let mut env = base_env();
    env.retain(|(k, _)| {
        !matches!(
            k.as_str(),
            "MINT_API_KEY" | "MEDIA_SHARED_SECRET" | "TWILIO_AUTH_TOKEN"
        )
    });
    env.extend(owned(&[
        ("MINT_API_KEY", &format!("ssm:{prefix}/mint-api-key")),
        (
            "MEDIA_SHARED_SECRET",
            &format!("ssm:{prefix}/shared-secret"),
        ),
        (
            "TWILIO_AUTH_TOKEN",
            &format!("ssm:{prefix}/twilio-auth-token"),
        ),
        ("SECRETS_TTL_SECONDS", "1"),
    ]));
    env.extend(moto.env());
    env
}

#[tokio::test]
async fn secrets_from_ssm_rotate_and_survive_an_outage() {
    let moto = Moto::start().await;
    let prefix = "/media-test/rotation";
    moto.put(&format!("{prefix}/mint-api-key"), "mint-v1-MARKER-aaaa")
        .await;
    moto.put(&format!("{prefix}/shared-secret"), SHARED_SECRET)
        .await;
    moto.put(&format!("{prefix}/twilio-auth-token"), TEST_AUTH_TOKEN)
        .await;
    let api = RuntimeApi::start().await;
    let lambda = LambdaProcess::start(&api, &ssm_env(&moto, prefix));
    api.wait_ready(Duration::from_secs(20)).await;

    let v1 = token_event(Some("Bearer mint-v1-MARKER-aaaa"), Some("{}"));
    let v2 = token_event(Some("Bearer mint-v2-MARKER-bbbb"), Some("{}"));
    let resp = api.call(&v1).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    verifier(SHARED_SECRET)
        .verify(resp.json()["token"].as_str().unwrap())
        .unwrap();
    assert_eq!(api.call(&v2).await.status, 401);
    // The Auth Token came from SSM too.
    assert_eq!(api.call(&event("twiml")).await.status, 200);

    // Rotate: after the TTL the new key is accepted and the old one refused, no restart.
    moto.put(&format!("{prefix}/mint-api-key"), "mint-v2-MARKER-bbbb")
        .await;
    moto.put(&format!("{prefix}/shared-secret"), "shared-v2-MARKER-cccc")
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(api.call(&v2).await.status, 200);
    assert_eq!(api.call(&v1).await.status, 401);
    let resp = api.call(&v2).await;
    verifier("shared-v2-MARKER-cccc")
        .verify(resp.json()["token"].as_str().unwrap())
        .unwrap();

    // SSM goes away: the last good values keep working, and the warning names parameters only.
    drop(moto);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let resp = api.call(&v2).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(api.call(&v1).await.status, 401);
    let logs = lambda.logs();
    assert!(
        logs.contains("secret refresh failed, keeping last values"),
        "{logs}"
    );
    assert!(logs.contains(&format!("{prefix}/mint-api-key")), "{logs}");
    for marker in [
        "MARKER-aaaa",
        "MARKER-bbbb",
        "MARKER-cccc",
        SHARED_SECRET,
        TEST_AUTH_TOKEN,
    ] {
        assert!(!logs.contains(marker), "log leaked {marker:?}:\n{logs}");
    }
}

#[tokio::test]
async fn a_missing_parameter_fails_start_up_naming_it() {
    let moto = Moto::start().await;
    let prefix = "/media-test/missing";
    moto.put(&format!("{prefix}/shared-secret"), SHARED_SECRET)
        .await;
    moto.put(&format!("{prefix}/twilio-auth-token"), TEST_AUTH_TOKEN)
        .await;
    let api = RuntimeApi::start().await;
    let mut lambda = LambdaProcess::start(&api, &ssm_env(&moto, prefix));
    let code = lambda.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(2));
    let stderr = lambda.stderr();
    assert!(
        stderr.contains(&format!("{prefix}/mint-api-key")),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&format!("{prefix}/shared-secret")),
        "{stderr}"
    );
    let logs = lambda.logs();
    assert!(
        !logs.contains(SHARED_SECRET) && !logs.contains(TEST_AUTH_TOKEN),
        "{logs}"
    );
    assert!(api.first_next().is_none());
}
