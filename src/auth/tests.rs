use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::*;

const NOW: u64 = 1_800_000_000;

fn secrets(list: &[&str]) -> Vec<Secret<String>> {
    list.iter().map(|s| Secret::new((*s).to_string())).collect()
}

fn verifier(list: &[&str]) -> JwtVerifier {
    JwtVerifier::new(&secrets(list), Duration::from_secs(30), Clock::Fixed(NOW))
}

fn sign(secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[test]
fn good_token_verifies_and_carries_sub() {
    let t = sign(
        "s1",
        json!({"aud":"media","exp":NOW+60,"iat":NOW,"sub":"CA1"}),
    );
    let c = verifier(&["s1"]).verify(&t).unwrap();
    assert_eq!(c.sub.as_deref(), Some("CA1"));
}

#[test]
fn each_failure_has_its_reason() {
    let v = verifier(&["s1"]);
    let cases = [
        (
            sign("s1", json!({"aud":"media","exp":NOW-31})),
            AuthError::Expired,
        ),
        (
            sign("s1", json!({"aud":"other","exp":NOW+60})),
            AuthError::Audience,
        ),
        (
            sign("s2", json!({"aud":"media","exp":NOW+60})),
            AuthError::Signature,
        ),
        (sign("s1", json!({"aud":"media"})), AuthError::MissingClaim),
        (sign("s1", json!({"exp":NOW+60})), AuthError::MissingClaim),
        (
            sign("s1", json!({"aud":"media","exp":NOW+600,"iat":NOW+120})),
            AuthError::NotYetValid,
        ),
        (
            sign("s1", json!({"aud":"media","exp":NOW+600,"nbf":NOW+120})),
            AuthError::NotYetValid,
        ),
        ("not-a-jwt".to_string(), AuthError::Malformed),
        ("a.b.c".to_string(), AuthError::Malformed),
    ];
    for (token, want) in cases {
        assert_eq!(v.verify(&token), Err(want), "{want:?}");
    }
}

#[test]
fn leeway_applies_to_exp_and_iat() {
    let v = verifier(&["s1"]);
    assert!(v
        .verify(&sign("s1", json!({"aud":"media","exp":NOW-10})))
        .is_ok());
    assert!(v
        .verify(&sign(
            "s1",
            json!({"aud":"media","exp":NOW+60,"iat":NOW+20})
        ))
        .is_ok());
}

#[test]
fn alg_none_and_other_algorithms_are_refused() {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = b64.encode(json!({"aud":"media","exp":NOW+60}).to_string());
    let none = format!("{header}.{body}.");
    assert_eq!(verifier(&["s1"]).verify(&none), Err(AuthError::Algorithm));

    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &json!({"aud":"media","exp":NOW+60}),
        &EncodingKey::from_secret(b"s1"),
    )
    .unwrap();
    assert_eq!(verifier(&["s1"]).verify(&hs512), Err(AuthError::Algorithm));
}

#[test]
fn rotation_any_secret_verifies_and_issuer_round_trips() {
    let old = sign("old", json!({"aud":"media","exp":NOW+60}));
    let v = verifier(&["new", "old"]);
    assert!(v.verify(&old).is_ok());
    assert_eq!(verifier(&["new"]).verify(&old), Err(AuthError::Signature));

    let issuer = TokenIssuer::new(&Secret::new("new".into()), Clock::Fixed(NOW));
    let minted = issuer.mint(Some("CA9"), Duration::from_secs(120)).unwrap();
    assert_eq!(minted.expires_at, NOW + 120);
    let claims = v.verify(minted.token.expose()).unwrap();
    assert_eq!(claims.sub.as_deref(), Some("CA9"));
    assert_eq!(claims.iat, Some(NOW));
    assert!(claims.jti.is_some_and(|j| j.len() == 32));
}

#[test]
fn authenticator_modes() {
    let open = Authenticator::new(&AuthMode::Open, Duration::ZERO, Clock::System);
    assert!(!open.required());
    assert_eq!(open.check(None), Ok(Grant::default()));

    let st = Authenticator::new(
        &AuthMode::StaticToken(crate::secrets::SecretSpec::Value(Secret::new("tok".into()))),
        Duration::ZERO,
        Clock::System,
    );
    assert_eq!(st.check(Some("tok")), Ok(Grant::default()));
    assert_eq!(st.check(Some("tok2")), Err(AuthError::StaticMismatch));
    assert_eq!(st.check(Some("")), Err(AuthError::StaticMismatch));
    assert_eq!(st.check(None), Err(AuthError::Missing));
}

#[test]
fn jwt_mode_reads_the_secret_list_and_fails_closed_without_a_value() {
    let mode = AuthMode::Jwt(crate::secrets::SecretSpec::Value(Secret::new(
        "new, old".into(),
    )));
    let auth = Authenticator::new(&mode, Duration::from_secs(30), Clock::Fixed(NOW));
    for secret in ["new", "old"] {
        let t = sign(
            secret,
            json!({"aud": "media", "exp": NOW + 60, "sub": "CA1"}),
        );
        assert_eq!(
            auth.check(Some(&t)).unwrap().call_sid.as_deref(),
            Some("CA1")
        );
    }
    let t = sign("other", json!({"aud": "media", "exp": NOW + 60}));
    assert_eq!(auth.check(Some(&t)), Err(AuthError::Signature));
    let Authenticator::Jwt(rotating) = &auth else {
        panic!("jwt mode")
    };
    assert!(
        Arc::ptr_eq(&rotating.verifier().unwrap(), &rotating.verifier().unwrap()),
        "keys are built once per secret value"
    );

    // A reference nobody loaded refuses everything rather than accepting anything.
    let mode = AuthMode::Jwt(crate::secrets::SecretSpec::Ssm("/never/loaded".into()));
    let auth = Authenticator::new(&mode, Duration::from_secs(30), Clock::Fixed(NOW));
    let t = sign("new", json!({"aud": "media", "exp": NOW + 60}));
    assert_eq!(auth.check(Some(&t)), Err(AuthError::SecretUnavailable));
    assert_eq!(AuthError::SecretUnavailable.label(), "secret_unavailable");
}

#[test]
fn unbound_tokens_live_at_most_60_seconds() {
    let v = verifier(&["s1"]);
    // Bound tokens may live long (the webhook's, /token's with a callSid).
    let bound = sign(
        "s1",
        json!({"aud":"media","exp":NOW+3600,"iat":NOW,"sub":"CA1"}),
    );
    assert!(v.verify(&bound).is_ok());
    // Unbound: 60 s from issue is fine, 61 s is not, and neither is a far exp without iat.
    let ok = sign("s1", json!({"aud":"media","exp":NOW+60,"iat":NOW}));
    assert!(v.verify(&ok).is_ok());
    let long = sign("s1", json!({"aud":"media","exp":NOW+61,"iat":NOW}));
    assert_eq!(v.verify(&long), Err(AuthError::UnboundTooLong));
    let no_iat = sign("s1", json!({"aud":"media","exp":NOW+3600}));
    assert_eq!(v.verify(&no_iat), Err(AuthError::UnboundTooLong));
    // The lifetime counts from issue, not from now: an old long-lived token stays refused.
    let old = sign("s1", json!({"aud":"media","exp":NOW+30,"iat":NOW-1000}));
    assert_eq!(v.verify(&old), Err(AuthError::UnboundTooLong));

    // The issuer caps unbound tokens itself, and leaves bound ones alone.
    let issuer = TokenIssuer::new(&Secret::new("s1".into()), Clock::Fixed(NOW));
    let minted = issuer.mint(None, Duration::from_secs(3600)).unwrap();
    assert_eq!(minted.expires_at, NOW + UNBOUND_MAX_TTL.as_secs());
    assert!(v.verify(minted.token.expose()).is_ok());
    let minted = issuer.mint(Some("CA1"), Duration::from_secs(3600)).unwrap();
    assert_eq!(minted.expires_at, NOW + 3600);
}

#[test]
fn a_grant_carries_jti_and_expiry() {
    let mode = AuthMode::Jwt(crate::secrets::SecretSpec::Value(Secret::new("s1".into())));
    let auth = Authenticator::new(&mode, Duration::ZERO, Clock::Fixed(NOW));
    let t = sign(
        "s1",
        json!({"aud":"media","exp":NOW+300,"iat":NOW,"sub":"CA1","jti":"j-1"}),
    );
    let grant = auth.check(Some(&t)).unwrap();
    assert_eq!(grant.jti.as_deref(), Some("j-1"));
    assert_eq!(grant.expires_at, Some(NOW + 300));
}

#[test]
fn a_context_claim_is_sealed_bound_to_its_call_and_opened_on_verify() {
    use crate::context::{AgentOverrides, CallContext};
    let sid = "CA0123456789abcdef0123456789abcdef";
    let context = CallContext {
        dynamic_variables: [("patient".to_string(), "Ada".to_string())].into(),
        overrides: AgentOverrides {
            first_message: Some("Hello Ada".into()),
            ..AgentOverrides::default()
        },
    };
    let issuer = TokenIssuer::new(&Secret::new("s1".to_string()), Clock::Fixed(NOW));
    let minted = issuer
        .mint_with_context(sid, Duration::from_secs(60), &context)
        .unwrap();
    // Nothing of the context is readable in the token (it sits in a URL Twilio logs).
    let payload = minted.token.expose().split('.').nth(1).unwrap().to_string();
    let claims = String::from_utf8(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert!(
        !claims.contains("Ada") && !claims.contains("patient"),
        "{claims}"
    );
    assert!(claims.contains("\"ctx\":\"v1."), "{claims}");

    let verified = verifier(&["s2", "s1"])
        .verify(minted.token.expose())
        .unwrap();
    assert_eq!(verified.context, Some(context.clone()));

    // The sealed claim moved to a token for another call does not open.
    let ctx = serde_json::from_str::<serde_json::Value>(&claims).unwrap()["ctx"].clone();
    let moved = sign(
        "s1",
        json!({"aud":"media","exp":NOW+60,"iat":NOW,"sub":"CA0123456789abcdef0123456789abcdee","jti":"j","ctx":ctx}),
    );
    assert_eq!(verifier(&["s1"]).verify(&moved), Err(AuthError::Context));
    let unbound = sign(
        "s1",
        json!({"aud":"media","exp":NOW+30,"iat":NOW,"jti":"j","ctx":ctx}),
    );
    assert_eq!(verifier(&["s1"]).verify(&unbound), Err(AuthError::Context));
    let forged = sign(
        "s1",
        json!({"aud":"media","exp":NOW+60,"iat":NOW,"sub":sid,"jti":"j","ctx":"v1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
    );
    assert_eq!(verifier(&["s1"]).verify(&forged), Err(AuthError::Context));
}
