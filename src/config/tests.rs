use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::secret::Secret;

/// Runs open on purpose (the agent tests are not about auth).
const OPEN: (&str, &str) = ("ALLOW_UNAUTHENTICATED", "true");

fn cfg(pairs: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
    let map: HashMap<&str, &str> = pairs.iter().copied().collect();
    Config::from_source(&map)
}

/// The relay's own defaults (what component tests and the simulator start from) are
/// media-ws's: the server's configuration is the relay's struct, unmapped.
#[test]
fn the_relay_defaults_are_the_servers() {
    let c = cfg(&[]).unwrap();
    assert_eq!(c.stream, crate::relay::StreamConfig::default());
    assert_eq!(
        c.call_control.policy,
        crate::relay::ControlPolicy::without_rest()
    );
}

#[test]
fn defaults_match_the_documented_values() {
    let c = cfg(&[]).unwrap();
    assert_eq!(c.server.port, 8080);
    assert_eq!(c.server.ws_path, "/rtm/voice");
    assert_eq!(c.server.auth, AuthMode::Open);
    assert_eq!(c.stream.idle_timeout, Duration::from_millis(30_000));
    assert_eq!(c.stream.keepalive, Duration::from_millis(15_000));
    assert_eq!(c.server.max_buffered_bytes, 1_048_576);
    assert_eq!(c.stream.max_payload_bytes, 16_000);
    assert_eq!(c.server.max_calls, 2_000);
    assert_eq!(c.server.drain_timeout, Duration::from_millis(25_000));
    assert_eq!(c.log_format, LogFormat::Json);
}

#[test]
fn invalid_values_name_the_variable() {
    for (var, value) in [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("IDLE_TIMEOUT_MS", "-1"),
        ("IDLE_TIMEOUT_MS", "0"),
        ("KEEPALIVE_MS", "1.5"),
        ("MAX_BUFFERED_BYTES", "12"),
        ("MAX_MEDIA_PAYLOAD_BYTES", "100"),
        ("MAX_CALLS", "0"),
        ("DRAIN_TIMEOUT_MS", "soon"),
        ("LOG_FORMAT", "xml"),
        ("WS_PATH", "rtm"),
        ("WS_PATH", "/rtm/"),
        ("WS_PATH", "/"),
    ] {
        let err = cfg(&[(var, value)]).unwrap_err();
        let ConfigError::Invalid { var: named, .. } = &err;
        assert_eq!(*named, var, "{var}={value}");
        assert!(err.to_string().contains(var));
    }
}

#[test]
fn shared_secret_wins_and_splits_for_rotation() {
    let c = cfg(&[
        ("MEDIA_SHARED_SECRET", "new-secret, old-secret"),
        ("MEDIA_AUTH_TOKEN", "static"),
    ])
    .unwrap();
    let AuthMode::Jwt(SecretSpec::Value(list)) = c.server.auth else {
        panic!("expected jwt mode with a value")
    };
    let keys = parse_secret_list(env::MEDIA_SHARED_SECRET, list.expose()).unwrap();
    let keys: Vec<&str> = keys.iter().map(|k| k.expose().as_str()).collect();
    assert_eq!(keys, ["new-secret", "old-secret"]);
}

#[test]
fn static_token_mode_and_empty_secret_entries() {
    let c = cfg(&[("MEDIA_AUTH_TOKEN", "tok")]).unwrap();
    assert_eq!(
        c.server.auth,
        AuthMode::StaticToken(SecretSpec::Value(Secret::new("tok".into())))
    );
    let err = cfg(&[("MEDIA_SHARED_SECRET", "a,,b")]).unwrap_err();
    assert!(err.to_string().contains("MEDIA_SHARED_SECRET"));
    assert!(!err.to_string().contains("a,,b"));
}

#[test]
fn empty_values_count_as_unset() {
    let c = cfg(&[("PORT", ""), ("MEDIA_AUTH_TOKEN", "")]).unwrap();
    assert_eq!(c.server.port, 8080);
    assert_eq!(c.server.auth, AuthMode::Open);
}

#[test]
fn agent_selection() {
    assert_eq!(
        cfg(&[]).unwrap().agent,
        AgentKind::Echo(Duration::from_millis(200))
    );
    assert_eq!(cfg(&[("AGENT", "none")]).unwrap().agent, AgentKind::None);
    let AgentKind::ElevenLabs(el) = cfg(&[("ELEVENLABS_AGENT_ID", "agent_1"), OPEN])
        .unwrap()
        .agent
    else {
        panic!("an agent id selects elevenlabs")
    };
    assert_eq!(el.agent_id.as_deref(), Some("agent_1"));
    assert!(!el.forward_binary);
    let AgentKind::ElevenLabs(el) = cfg(&[
        ("ELEVENLABS_WS_URL", "ws://127.0.0.1:9/x"),
        ("EL_FORWARD_BINARY", "true"),
        ("ELEVENLABS_API_KEY", "k"),
        OPEN,
    ])
    .unwrap()
    .agent
    else {
        panic!("a ws url selects elevenlabs")
    };
    assert!(el.forward_binary);
    assert!(!format!("{el:?}").contains("\"k\""));
    assert_eq!(
        cfg(&[("AGENT", "echo"), ("ELEVENLABS_AGENT_ID", "a")])
            .unwrap()
            .agent,
        AgentKind::Echo(Duration::from_millis(200))
    );
    for (var, value) in [
        ("AGENT", "robot"),
        ("AGENT", "elevenlabs"),
        ("ELEVENLABS_WS_URL", "http://x"),
        ("ELEVENLABS_API_BASE", "ftp://x"),
        ("EL_FORWARD_BINARY", "maybe"),
        ("PLAYOUT_LEAD_MS", "5"),
    ] {
        let ConfigError::Invalid { var: named, .. } = cfg(&[(var, value)]).unwrap_err();
        assert_eq!(named, var, "{var}={value}");
    }
}

#[test]
fn ecs_settings() {
    let c = cfg(&[]).unwrap();
    assert_eq!((c.task_protection, c.emf), (None, None));
    let c = cfg(&[
        ("TASK_PROTECTION", "true"),
        ("ECS_AGENT_URI", "http://169.254.170.2/api/x"),
        ("EMF_INTERVAL_MS", "10000"),
        ("EMF_SERVICE_NAME", "svc"),
    ])
    .unwrap();
    let tp = c.task_protection.unwrap();
    assert_eq!(
        (tp.agent_uri.as_str(), tp.minutes),
        ("http://169.254.170.2/api/x", 60)
    );
    let emf = c.emf.unwrap();
    assert_eq!(
        (emf.namespace.as_str(), emf.service_name.as_str()),
        ("MediaOrchestrator", "svc")
    );
    let ConfigError::Invalid { var, .. } = cfg(&[("TASK_PROTECTION", "true")]).unwrap_err();
    assert_eq!(var, "TASK_PROTECTION");
    let ConfigError::Invalid { var, .. } = cfg(&[
        ("TASK_PROTECTION", "true"),
        ("ECS_AGENT_URI", "http://x"),
        ("TASK_PROTECTION_MINUTES", "3000"),
    ])
    .unwrap_err();
    assert_eq!(var, "TASK_PROTECTION_MINUTES");
}

#[test]
fn secrets_may_be_ssm_references() {
    let c = cfg(&[("MEDIA_SHARED_SECRET", "ssm:/media/shared")]).unwrap();
    assert_eq!(
        c.server.auth,
        AuthMode::Jwt(SecretSpec::Ssm("/media/shared".into()))
    );
    let c = cfg(&[("MEDIA_AUTH_TOKEN", "ssm:/media/token")]).unwrap();
    assert_eq!(
        c.server.auth,
        AuthMode::StaticToken(SecretSpec::Ssm("/media/token".into()))
    );
    let err = cfg(&[("MEDIA_SHARED_SECRET", "ssm:/bad name")]).unwrap_err();
    assert!(err.to_string().contains("MEDIA_SHARED_SECRET"), "{err}");
    assert_eq!(c.secrets_ttl, Duration::from_secs(300));
    let c = cfg(&[("SECRETS_TTL_SECONDS", "2")]).unwrap();
    assert_eq!(c.secrets_ttl, Duration::from_secs(2));
    assert!(cfg(&[("SECRETS_TTL_SECONDS", "0")]).is_err());
}

#[test]
fn twilio_signature_on_the_upgrade() {
    assert_eq!(cfg(&[]).unwrap().server.stream_signature, None);
    // Off unless asked for, even with a token.
    let c = cfg(&[("TWILIO_AUTH_TOKEN", "tok")]).unwrap();
    assert_eq!(c.server.stream_signature, None);
    let c = cfg(&[
        ("VERIFY_TWILIO_SIGNATURE", "true"),
        ("TWILIO_AUTH_TOKEN", "ssm:/twilio/token"),
        ("PUBLIC_STREAM_BASE", "wss://media.example.com/"),
    ])
    .unwrap();
    assert_eq!(
        c.server.stream_signature,
        Some(StreamSignatureConfig {
            auth_token: SecretSpec::Ssm("/twilio/token".into()),
            public_base: Some("wss://media.example.com".into()),
        })
    );
    let c = cfg(&[("VERIFY_TWILIO_SIGNATURE", "1"), ("TWILIO_AUTH_TOKEN", "t")]).unwrap();
    assert_eq!(c.server.stream_signature.unwrap().public_base, None);

    for (pairs, var) in [
        (
            &[("VERIFY_TWILIO_SIGNATURE", "maybe")][..],
            "VERIFY_TWILIO_SIGNATURE",
        ),
        (
            &[("VERIFY_TWILIO_SIGNATURE", "true")][..],
            "TWILIO_AUTH_TOKEN",
        ),
        (
            &[
                ("VERIFY_TWILIO_SIGNATURE", "true"),
                ("TWILIO_AUTH_TOKEN", "t"),
                ("PUBLIC_STREAM_BASE", "https://media.example.com"),
            ][..],
            "PUBLIC_STREAM_BASE",
        ),
        (
            &[
                ("VERIFY_TWILIO_SIGNATURE", "true"),
                ("TWILIO_AUTH_TOKEN", "t"),
                ("PUBLIC_STREAM_BASE", "wss://media.example.com/rtm"),
            ][..],
            "PUBLIC_STREAM_BASE",
        ),
    ] {
        let err = cfg(pairs).unwrap_err();
        let ConfigError::Invalid { var: named, .. } = &err;
        assert_eq!(*named, var, "{pairs:?}");
    }
}

#[test]
fn public_stream_base_takes_the_origin_or_the_stream_url_base() {
    let base = |value: &'static str, ws_path: &'static str| {
        cfg(&[
            ("VERIFY_TWILIO_SIGNATURE", "true"),
            ("TWILIO_AUTH_TOKEN", "t"),
            ("WS_PATH", ws_path),
            ("PUBLIC_STREAM_BASE", value),
        ])
        .map(|c| c.server.stream_signature.and_then(|s| s.public_base))
    };
    // What the shipped templates set (the Lambda's STREAM_URL_BASE) and the bare origin agree.
    for value in [
        "wss://media.example.com/rtm/voice",
        "wss://media.example.com/rtm/voice/",
        "wss://media.example.com",
        " wss://media.example.com/ ",
    ] {
        assert_eq!(
            base(value, "/rtm/voice").unwrap().as_deref(),
            Some("wss://media.example.com"),
            "{value}"
        );
    }
    assert_eq!(
        base("wss://m.example.com:8443/custom/path", "/custom/path")
            .unwrap()
            .as_deref(),
        Some("wss://m.example.com:8443")
    );
    // Another path, or another scheme: refused, and the message says what to put.
    let err = base("wss://media.example.com/other", "/rtm/voice").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("PUBLIC_STREAM_BASE"), "{msg}");
    assert!(
        msg.contains("wss://media.example.com/rtm/voice") && msg.contains("wss://host[:port]"),
        "{msg}"
    );
    assert!(base("ws://media.example.com", "/rtm/voice").is_err());
}

#[test]
fn a_paid_agent_never_runs_open_by_accident() {
    let el = ("ELEVENLABS_AGENT_ID", "agent_1");
    let err = cfg(&[el]).unwrap_err();
    let ConfigError::Invalid { var, reason } = &err;
    assert_eq!(*var, "MEDIA_SHARED_SECRET");
    assert!(reason.contains("ALLOW_UNAUTHENTICATED=true"), "{reason}");
    assert!(cfg(&[("AGENT", "elevenlabs"), ("ELEVENLABS_WS_URL", "wss://x/y")]).is_err());
    // A secret, a static token, or an explicit opt-in: starts.
    assert!(cfg(&[el, ("MEDIA_SHARED_SECRET", "s")]).is_ok());
    assert!(cfg(&[el, ("MEDIA_AUTH_TOKEN", "t")]).is_ok());
    assert!(cfg(&[el, ("ALLOW_UNAUTHENTICATED", "true")]).is_ok());
    assert!(cfg(&[el, ("ALLOW_UNAUTHENTICATED", "false")]).is_err());
    // The free agents may run open (a fresh machine's `cargo run`).
    assert!(cfg(&[]).is_ok());
    assert!(cfg(&[("AGENT", "none")]).is_ok());
}

#[test]
fn twilio_account_sid_and_call_registry() {
    let c = cfg(&[]).unwrap();
    assert_eq!(c.stream.account_sid, None);
    assert_eq!(c.call_registry, None);
    let sid = "AC0123456789abcdef0123456789abcdef";
    assert_eq!(
        cfg(&[("TWILIO_ACCOUNT_SID", sid)])
            .unwrap()
            .stream
            .account_sid
            .as_deref(),
        Some(sid)
    );
    for bad in [
        "AC123",
        "CA0123456789abcdef0123456789abcdef",
        "ACzz23456789abcdef0123456789abcdef",
    ] {
        let err = cfg(&[("TWILIO_ACCOUNT_SID", bad)]).unwrap_err();
        let ConfigError::Invalid { var, .. } = err;
        assert_eq!(var, "TWILIO_ACCOUNT_SID");
    }
    let c = cfg(&[("CALL_REGISTRY_TABLE", "calls")]).unwrap();
    assert_eq!(
        c.call_registry,
        Some(CallRegistryConfig {
            table: "calls".into(),
            lease: Duration::from_secs(60),
            timeout: Duration::from_millis(2000),
        })
    );
    assert!(cfg(&[
        ("CALL_REGISTRY_TABLE", "calls"),
        ("CALL_REGISTRY_LEASE_SECONDS", "1")
    ])
    .is_err());
}

#[test]
fn twilio_rest_takes_an_auth_token_or_an_api_key_and_needs_the_account() {
    use crate::twilio::rest::RestCredentials;
    const AC: &str = "AC0123456789abcdef0123456789abcdef";
    const SK: &str = "SK0123456789abcdef0123456789abcdef";
    let c = cfg(&[
        OPEN,
        ("TWILIO_ACCOUNT_SID", AC),
        ("TWILIO_AUTH_TOKEN", "tok"),
    ])
    .unwrap();
    let rest = c.call_control.rest.unwrap();
    assert_eq!(rest.api_base, "https://api.twilio.com");
    assert!(matches!(rest.credentials, RestCredentials::AuthToken(_)));
    let c = cfg(&[
        OPEN,
        ("TWILIO_ACCOUNT_SID", AC),
        ("TWILIO_API_KEY_SID", SK),
        ("TWILIO_API_KEY_SECRET", "ssm:/p/key"),
        ("TWILIO_API_BASE", "https://api.dublin.ie1.twilio.com/"),
    ])
    .unwrap();
    let rest = c.call_control.rest.unwrap();
    assert_eq!(rest.api_base, "https://api.dublin.ie1.twilio.com");
    assert!(matches!(rest.credentials, RestCredentials::ApiKey { ref sid, .. } if sid == SK));
    // No account: no REST (the token alone is for signatures).
    assert!(cfg(&[OPEN, ("TWILIO_AUTH_TOKEN", "tok")])
        .unwrap()
        .call_control
        .rest
        .is_none());
    let err = |pairs: &[(&'static str, &'static str)]| match cfg(pairs) {
        Err(ConfigError::Invalid { var, .. }) => var,
        Ok(_) => panic!("accepted {pairs:?}"),
    };
    assert_eq!(
        err(&[OPEN, ("TWILIO_API_KEY_SID", SK)]),
        "TWILIO_API_KEY_SID"
    );
    assert_eq!(
        err(&[
            OPEN,
            ("TWILIO_API_KEY_SID", SK),
            ("TWILIO_API_KEY_SECRET", "s")
        ]),
        "TWILIO_ACCOUNT_SID"
    );
    assert_eq!(
        err(&[OPEN, ("TWILIO_API_BASE", "api.twilio.com")]),
        "TWILIO_API_BASE"
    );
    assert_eq!(
        err(&[OPEN, ("TRANSFER_ALLOWLIST", "+15551230000")]),
        "TRANSFER_ALLOWLIST",
        "transfers need REST"
    );
    assert_eq!(
        err(&[
            OPEN,
            ("TWILIO_ACCOUNT_SID", AC),
            ("TWILIO_AUTH_TOKEN", "t"),
            ("TRANSFER_ALLOWLIST", "1555*")
        ]),
        "TRANSFER_ALLOWLIST"
    );
    assert_eq!(
        err(&[OPEN, ("TRANSFER_CALLER_ID", "5550001111")]),
        "TRANSFER_CALLER_ID"
    );
    let c = cfg(&[
        OPEN,
        ("TWILIO_ACCOUNT_SID", AC),
        ("TWILIO_AUTH_TOKEN", "t"),
        ("TRANSFER_ALLOWLIST", "+1555123*"),
        ("END_GRACE_MS", "3000"),
    ])
    .unwrap();
    assert!(c
        .call_control
        .policy
        .transfer_allowlist
        .allows("+15551239999"));
    assert_eq!(c.call_control.policy.end_grace, Duration::from_secs(3));
}

#[test]
fn a_call_has_a_longest_life_and_transfers_an_action_url() {
    let err = |pairs: &[(&'static str, &'static str)]| match cfg(pairs) {
        Err(ConfigError::Invalid { var, .. }) => var,
        other => panic!("accepted {pairs:?}: {other:?}"),
    };
    let c = cfg(&[OPEN]).unwrap();
    assert_eq!(
        c.call_control.policy.max_call,
        Some(Duration::from_secs(3300)),
        "55 minutes by default"
    );
    assert_eq!(c.call_control.policy.transfer_action_url, None);
    assert_eq!(
        cfg(&[OPEN, ("MAX_CALL_SECONDS", "0")])
            .unwrap()
            .call_control
            .policy
            .max_call,
        None
    );
    assert_eq!(
        cfg(&[OPEN, ("MAX_CALL_SECONDS", "600")])
            .unwrap()
            .call_control
            .policy
            .max_call,
        Some(Duration::from_secs(600))
    );
    assert_eq!(err(&[OPEN, ("MAX_CALL_SECONDS", "1h")]), "MAX_CALL_SECONDS");
    let url = "https://api.example.com/prod/transfer/result";
    let c = cfg(&[OPEN, ("TRANSFER_ACTION_URL", url)]).unwrap();
    assert_eq!(
        c.call_control.policy.transfer_action_url.as_deref(),
        Some(url)
    );
    for bad in [
        "/transfer/result",
        "https:///x",
        "ftp://h/x",
        "https://h/a b",
    ] {
        assert_eq!(
            err(&[OPEN, ("TRANSFER_ACTION_URL", bad)]),
            "TRANSFER_ACTION_URL",
            "{bad}"
        );
    }
}

#[test]
fn credentials_and_call_audio_go_in_clear_only_to_a_loopback_host() {
    const AC: &str = "AC0123456789abcdef0123456789abcdef";
    let rest = |base: &'static str| {
        cfg(&[
            OPEN,
            ("TWILIO_ACCOUNT_SID", AC),
            ("TWILIO_AUTH_TOKEN", "t"),
            ("TWILIO_API_BASE", base),
        ])
    };
    for ok in [
        "https://api.twilio.com",
        "http://127.0.0.1:9",
        "http://127.0.0.2:8080",
        "http://localhost:4010",
        "http://[::1]:4010",
    ] {
        assert!(rest(ok).is_ok(), "{ok}");
    }
    for bad in [
        "http://api.twilio.com",
        "http://10.0.0.5:8080",
        "http://127.0.0.1.example.com",
        "api.twilio.com",
    ] {
        let Err(ConfigError::Invalid { var, reason }) = rest(bad) else {
            panic!("{bad} accepted");
        };
        assert_eq!(var, "TWILIO_API_BASE", "{bad}");
        assert!(reason.contains("https://"), "{reason}");
    }
    for (var, bad, ok) in [
        (
            "ELEVENLABS_API_BASE",
            "http://api.elevenlabs.io",
            "http://127.0.0.1:7000",
        ),
        (
            "ELEVENLABS_WS_URL",
            "ws://api.elevenlabs.io/v1/convai",
            "ws://127.0.0.1:7001/ws",
        ),
    ] {
        let with = |url: &'static str| cfg(&[OPEN, ("ELEVENLABS_AGENT_ID", "agent_x"), (var, url)]);
        let Err(ConfigError::Invalid { var: named, .. }) = with(bad) else {
            panic!("{bad} accepted");
        };
        assert_eq!(named, var);
        assert!(with(ok).is_ok(), "{ok}");
    }
}

#[test]
fn the_agent_limit_needs_the_registry_and_a_usable_overflow() {
    let base = [("AGENT", "echo")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut env: HashMap<&str, &str> = base.into_iter().collect();
        env.extend(extra.iter().copied());
        Config::from_source(&env)
    };
    let err = with(&[("AGENT_CONCURRENCY_LIMIT", "2")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("AGENT_CONCURRENCY_LIMIT") && err.contains("CALL_REGISTRY_TABLE"),
        "{err}"
    );
    let err = with(&[
        ("AGENT_CONCURRENCY_LIMIT", "0"),
        ("CALL_REGISTRY_TABLE", "t"),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("AGENT_CONCURRENCY_LIMIT"), "{err}");
    let err = with(&[("OVERFLOW_NUMBER", "555-1234")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("OVERFLOW_NUMBER"), "{err}");
    let c = with(&[
        ("AGENT_CONCURRENCY_LIMIT", "15"),
        ("CALL_REGISTRY_TABLE", "t"),
        ("OVERFLOW_NUMBER", "+15557770000"),
    ])
    .unwrap();
    let admission = c.admission.unwrap();
    assert_eq!(admission.limit, 15);
    assert_eq!(admission.overflow.number.as_deref(), Some("+15557770000"));
    assert_eq!(
        c.overflow.message,
        crate::config::env::OVERFLOW_MESSAGE_DEFAULT
    );
    assert!(with(&[]).unwrap().admission.is_none());
}

/// docs/configuration.md has one row per variable either binary reads, and no other: the
/// table is checked against the `pub const NAME: &str` of `config::env` and the Lambda's
/// `env` (defaults, `…_DEFAULT`, are not variables).
#[test]
fn the_configuration_doc_lists_every_variable_and_only_those() {
    fn constants(source: &str) -> std::collections::BTreeSet<String> {
        source
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub const "))
            .filter_map(|l| l.split_once(": &str"))
            .map(|(name, _)| name.to_string())
            .filter(|name| !name.ends_with("_DEFAULT"))
            .collect()
    }
    let mut code = constants(include_str!("env.rs"));
    code.extend(constants(include_str!("../lambda/config.rs")));
    let doc: std::collections::BTreeSet<String> = include_str!("../../docs/configuration.md")
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` |"))
        .map(|(name, _)| name.to_string())
        .collect();
    let missing: Vec<_> = code.difference(&doc).collect();
    let stale: Vec<_> = doc.difference(&code).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/configuration.md: missing {missing:?}, not a variable {stale:?}"
    );
    assert!(code.len() > 60, "the constants were read: {}", code.len());
}
