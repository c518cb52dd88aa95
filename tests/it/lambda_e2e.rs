//! Acceptance: tokens minted by `media-lambda` open `media-ws` streams (both real binaries, both
//! reading the shared secret from moto's SSM), expired / foreign-call / old-secret tokens do
//! not; and Twilio's signature on the upgrade when `VERIFY_TWILIO_SIGNATURE` is on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use media_test_support::lambda as lambda_support;
use media_test_support::media_ws as support;

use std::time::Duration;

use futures_util::SinkExt;
use lambda_support::{event, LambdaProcess, Moto, RuntimeApi, TEST_AUTH_TOKEN, TEST_MINT_API_KEY};
use media_orchestrator::auth::{Clock, TokenIssuer};
use media_orchestrator::secret::Secret;
use media_orchestrator::twilio::signature::{compute_signature, SignatureAlgorithm};
use serde_json::Value;
use support::{connected, expect_close, play_call, start, Server, CALL_SID};

const T: Duration = Duration::from_secs(10);
const PUBLIC_STREAM: &str = "wss://media.example.com";

fn env_refs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn token_event(body: &str) -> Value {
    let mut e = event("token");
    e["headers"]["authorization"] = format!("Bearer {TEST_MINT_API_KEY}").into();
    e["body"] = body.into();
    e
}

async fn mint(api: &RuntimeApi, body: &str) -> String {
    let resp = api.call(&token_event(body)).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    resp.json()["token"].as_str().unwrap().to_string()
}

fn stream_path(token: &str) -> String {
    format!("/rtm/voice/jwt/{token}")
}

#[tokio::test]
async fn lambda_tokens_open_media_ws_streams_and_rotation_retires_the_old_secret() {
    let moto = Moto::start().await;
    let p = "/media-e2e";
    moto.put(&format!("{p}/shared-secret"), "e2e-old-secret")
        .await;
    moto.put(&format!("{p}/mint-api-key"), TEST_MINT_API_KEY)
        .await;
    moto.put(&format!("{p}/twilio-auth-token"), TEST_AUTH_TOKEN)
        .await;

    let mut lambda_env: Vec<(String, String)> = [
        ("MINT_API_KEY", format!("ssm:{p}/mint-api-key")),
        ("MEDIA_SHARED_SECRET", format!("ssm:{p}/shared-secret")),
        ("TWILIO_AUTH_TOKEN", format!("ssm:{p}/twilio-auth-token")),
        ("STREAM_URL_BASE", format!("{PUBLIC_STREAM}/rtm/voice")),
        ("SECRETS_TTL_SECONDS", "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    lambda_env.extend(moto.env());
    let api = RuntimeApi::start().await;
    let _lambda = LambdaProcess::start(&api, &lambda_env);

    let mut ws_env: Vec<(String, String)> = vec![
        (
            "MEDIA_SHARED_SECRET".into(),
            format!("ssm:{p}/shared-secret"),
        ),
        ("SECRETS_TTL_SECONDS".into(), "1".into()),
        ("JWT_LEEWAY_SECONDS".into(), "0".into()),
    ];
    ws_env.extend(moto.env());
    let ws = Server::start(&env_refs(&ws_env)).await;
    api.wait_ready(Duration::from_secs(20)).await;

    // /token, bound to the CallSid: 101, and a call that plays to its normal end.
    let token = mint(
        &api,
        &format!(r#"{{"callSid":"{CALL_SID}","ttlSeconds":600}}"#),
    )
    .await;
    let mut call = ws.connect(&stream_path(&token), &[]).await.unwrap();
    play_call(&mut call, 5).await;
    assert_eq!(
        expect_close(&mut call, T).await,
        (1000, "stream stopped".into())
    );

    // /twiml: the <Stream url> itself opens the stream for the webhook's CallSid.
    let resp = api.call(&event("twiml")).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let doc = roxmltree::Document::parse(&resp.body).unwrap();
    let url = doc
        .descendants()
        .find(|n| n.has_tag_name("Stream"))
        .unwrap()
        .attribute("url")
        .unwrap()
        .to_string();
    let path = url.strip_prefix(PUBLIC_STREAM).unwrap();
    let mut call = ws.connect(path, &[]).await.unwrap();
    play_call(&mut call, 3).await;
    assert_eq!(
        expect_close(&mut call, T).await,
        (1000, "stream stopped".into())
    );

    // A token for another call: upgraded, then closed with 1008 at `start`.
    let other = mint(&api, r#"{"callSid":"CA00000000000000000000000000000000"}"#).await;
    let mut call = ws.connect(&stream_path(&other), &[]).await.unwrap();
    call.send(connected()).await.unwrap();
    call.send(start()).await.unwrap();
    assert_eq!(expect_close(&mut call, T).await.0, 1008);

    // Expired (1 s TTL, no leeway on media-ws): refused before the upgrade.
    let short = mint(&api, r#"{"ttlSeconds":1}"#).await;
    let unused_old = mint(&api, r#"{"ttlSeconds":600}"#).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(ws.connect(&stream_path(&short), &[]).await.err(), Some(401));

    // Rotation: the parameter now holds only the new secret. After the TTL both binaries use
    // it: a token signed with the removed secret is refused, a fresh one opens.
    moto.put(&format!("{p}/shared-secret"), "e2e-new-secret")
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        ws.connect(&stream_path(&unused_old), &[]).await.err(),
        Some(401)
    );
    let fresh = mint(&api, r#"{"ttlSeconds":600}"#).await;
    let mut call = ws.connect(&stream_path(&fresh), &[]).await.unwrap();
    play_call(&mut call, 1).await;
    assert_eq!(expect_close(&mut call, T).await.0, 1000);

    assert_eq!(
        ws.metric("media_handshake_rejections_total{reason=\"token_expired\"}")
            .await,
        1.0
    );
    assert_eq!(
        ws.metric("media_handshake_rejections_total{reason=\"token_signature\"}")
            .await,
        1.0
    );
    let logs = ws.logs();
    for marker in [
        "e2e-old-secret",
        "e2e-new-secret",
        token.as_str(),
        fresh.as_str(),
    ] {
        assert!(
            !logs.contains(marker),
            "media-ws log leaked a secret or token"
        );
    }
}

fn sign_upgrade(url: &str) -> String {
    compute_signature(
        TEST_AUTH_TOKEN.as_bytes(),
        SignatureAlgorithm::HmacSha1,
        url,
        &[],
    )
}

#[tokio::test]
async fn twilio_signature_on_the_upgrade_when_enabled() {
    let moto = Moto::start().await;
    moto.put("/media-sig/twilio-auth-token", TEST_AUTH_TOKEN)
        .await;
    let mut env: Vec<(String, String)> = vec![
        ("MEDIA_SHARED_SECRET".into(), "sig-secret".into()),
        ("VERIFY_TWILIO_SIGNATURE".into(), "true".into()),
        (
            "TWILIO_AUTH_TOKEN".into(),
            "ssm:/media-sig/twilio-auth-token".into(),
        ),
    ];
    env.extend(moto.env());
    let ws = Server::start(&env_refs(&env)).await;
    let issuer = TokenIssuer::new(&Secret::new("sig-secret".into()), Clock::System);
    let token = issuer
        .mint(Some(CALL_SID), Duration::from_secs(60))
        .unwrap();
    let path = stream_path(token.token.expose());

    // URL rebuilt from the Host header the client sent.
    let host_url = format!("wss://{}{path}", ws.addr);
    assert_eq!(ws.connect(&path, &[]).await.err(), Some(401));
    let bad = sign_upgrade(&format!("https://{}{path}", ws.addr));
    assert_eq!(
        ws.connect(&path, &[("x-twilio-signature", &bad)])
            .await
            .err(),
        Some(401)
    );
    // A good signature for another path (a leaked signature replayed with another token).
    let other = issuer
        .mint(Some(CALL_SID), Duration::from_secs(60))
        .unwrap();
    let replay = sign_upgrade(&format!(
        "wss://{}{}",
        ws.addr,
        stream_path(other.token.expose())
    ));
    assert_eq!(
        ws.connect(&path, &[("x-twilio-signature", &replay)])
            .await
            .err(),
        Some(401)
    );
    let good = sign_upgrade(&host_url);
    let mut call = ws
        .connect(&path, &[("x-twilio-signature", &good)])
        .await
        .unwrap();
    play_call(&mut call, 1).await;
    assert_eq!(expect_close(&mut call, T).await.0, 1000);
    // The signature does not replace the token.
    let no_token_sig = sign_upgrade(&format!("wss://{}/rtm/voice", ws.addr));
    assert_eq!(
        ws.connect("/rtm/voice", &[("x-twilio-signature", &no_token_sig)])
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        ws.metric("media_handshake_rejections_total{reason=\"twilio_signature\"}")
            .await,
        3.0
    );

    // Behind a load balancer: the configured public origin is what Twilio signed.
    env.push(("PUBLIC_STREAM_BASE".into(), PUBLIC_STREAM.into()));
    let behind = Server::start(&env_refs(&env)).await;
    let public = sign_upgrade(&format!("{PUBLIC_STREAM}{path}"));
    let host_signed = sign_upgrade(&format!("wss://{}{path}", behind.addr));
    assert_eq!(
        behind
            .connect(&path, &[("x-twilio-signature", &host_signed)])
            .await
            .err(),
        Some(401)
    );
    let mut call = behind
        .connect(&path, &[("x-twilio-signature", &public)])
        .await
        .unwrap();
    play_call(&mut call, 1).await;
    assert_eq!(expect_close(&mut call, T).await.0, 1000);
    assert!(!behind.logs().contains(TEST_AUTH_TOKEN));
}
