use std::collections::HashMap;
use std::time::Duration;

use super::*;

fn cfg(pairs: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
    let map: HashMap<&str, &str> = pairs.iter().copied().collect();
    Config::from_source(&map)
}

#[test]
fn defaults_match_the_documented_values() {
    let c = cfg(&[]).unwrap();
    assert_eq!(c.port, 8080);
    assert_eq!(c.ws_path, "/rtm/voice");
    assert_eq!(c.auth, AuthMode::Open);
    assert_eq!(c.idle_timeout, Duration::from_millis(30_000));
    assert_eq!(c.keepalive, Duration::from_millis(15_000));
    assert_eq!(c.max_buffered_bytes, 1_048_576);
    assert_eq!(c.max_media_payload_bytes, 16_000);
    assert_eq!(c.max_calls, 2_000);
    assert_eq!(c.drain_timeout, Duration::from_millis(25_000));
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
    let AuthMode::Jwt(keys) = c.auth else {
        panic!("expected jwt mode")
    };
    let keys: Vec<&str> = keys.iter().map(|k| k.expose().as_str()).collect();
    assert_eq!(keys, ["new-secret", "old-secret"]);
}

#[test]
fn static_token_mode_and_empty_secret_entries() {
    let c = cfg(&[("MEDIA_AUTH_TOKEN", "tok")]).unwrap();
    assert_eq!(c.auth, AuthMode::StaticToken(Secret::new("tok".into())));
    let err = cfg(&[("MEDIA_SHARED_SECRET", "a,,b")]).unwrap_err();
    assert!(err.to_string().contains("MEDIA_SHARED_SECRET"));
    assert!(!err.to_string().contains("a,,b"));
}

#[test]
fn empty_values_count_as_unset() {
    let c = cfg(&[("PORT", ""), ("MEDIA_AUTH_TOKEN", "")]).unwrap();
    assert_eq!(c.port, 8080);
    assert_eq!(c.auth, AuthMode::Open);
}

#[test]
fn agent_selection() {
    assert_eq!(
        cfg(&[]).unwrap().agent,
        AgentKind::Echo(Duration::from_millis(200))
    );
    assert_eq!(cfg(&[("AGENT", "none")]).unwrap().agent, AgentKind::None);
    let AgentKind::ElevenLabs(el) = cfg(&[("ELEVENLABS_AGENT_ID", "agent_1")]).unwrap().agent
    else {
        panic!("an agent id selects elevenlabs")
    };
    assert_eq!(el.agent_id.as_deref(), Some("agent_1"));
    assert!(!el.forward_binary);
    let AgentKind::ElevenLabs(el) = cfg(&[
        ("ELEVENLABS_WS_URL", "ws://127.0.0.1:9/x"),
        ("EL_FORWARD_BINARY", "true"),
        ("ELEVENLABS_API_KEY", "k"),
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
        ("EL_FORWARD_BINARY", "yes"),
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
