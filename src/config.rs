//! Typed configuration read once from the environment before anything binds. Owns variable
//! names, defaults and validation; it does not resolve `ssm:` references (see `secrets`).

use std::collections::HashMap;
use std::time::Duration;

use crate::ecs::{Emf, TaskProtection};
use crate::elevenlabs::ElevenLabsConfig;
use crate::secret::Secret;
use crate::secrets::SecretSpec;

/// Environment variable names and their defaults.
pub mod env {
    /// TCP port for HTTP and WebSocket (`0` picks a free port).
    pub const PORT: &str = "PORT";
    /// Default for [`PORT`].
    pub const PORT_DEFAULT: u16 = 8080;
    /// Path the WebSocket upgrade is accepted on (and `<path>/jwt/<token>`).
    pub const WS_PATH: &str = "WS_PATH";
    /// Default for [`WS_PATH`].
    pub const WS_PATH_DEFAULT: &str = "/rtm/voice";
    /// Static stream token (compared in constant time) when no shared secret is set.
    pub const MEDIA_AUTH_TOKEN: &str = "MEDIA_AUTH_TOKEN";
    /// HS256 secret(s), comma separated: any verifies, the first signs.
    pub const MEDIA_SHARED_SECRET: &str = "MEDIA_SHARED_SECRET";
    /// Close a call after this long without a message from the peer.
    pub const IDLE_TIMEOUT_MS: &str = "IDLE_TIMEOUT_MS";
    /// Default for [`IDLE_TIMEOUT_MS`].
    pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
    /// Interval of WebSocket pings; a peer that misses one whole interval is closed.
    pub const KEEPALIVE_MS: &str = "KEEPALIVE_MS";
    /// Default for [`KEEPALIVE_MS`].
    pub const KEEPALIVE_MS_DEFAULT: u64 = 15_000;
    /// Outbound bytes queued for one peer above which audio frames are dropped.
    pub const MAX_BUFFERED_BYTES: &str = "MAX_BUFFERED_BYTES";
    /// Default for [`MAX_BUFFERED_BYTES`].
    pub const MAX_BUFFERED_BYTES_DEFAULT: usize = 1_048_576;
    /// Largest decoded `media` payload accepted (bytes of μ-law; Twilio sends 160).
    pub const MAX_MEDIA_PAYLOAD_BYTES: &str = "MAX_MEDIA_PAYLOAD_BYTES";
    /// Default for [`MAX_MEDIA_PAYLOAD_BYTES`]: 2 s of audio, 100× a Twilio frame.
    pub const MAX_MEDIA_PAYLOAD_BYTES_DEFAULT: usize = 16_000;
    /// Concurrent calls; the next handshake gets 503.
    pub const MAX_CALLS: &str = "MAX_CALLS";
    /// Default for [`MAX_CALLS`].
    pub const MAX_CALLS_DEFAULT: usize = 2_000;
    /// On SIGTERM, how long live calls get to end on their own before they are closed.
    pub const DRAIN_TIMEOUT_MS: &str = "DRAIN_TIMEOUT_MS";
    /// Default for [`DRAIN_TIMEOUT_MS`] (below the ECS stop timeout and ALB deregistration).
    pub const DRAIN_TIMEOUT_MS_DEFAULT: u64 = 25_000;
    /// How long a client gets to send a complete HTTP request (the upgrade) after connecting.
    pub const HANDSHAKE_TIMEOUT_MS: &str = "HANDSHAKE_TIMEOUT_MS";
    /// Default for [`HANDSHAKE_TIMEOUT_MS`].
    pub const HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 5_000;
    /// Clock skew tolerated on JWT `exp`, `nbf` and `iat`.
    pub const JWT_LEEWAY_SECONDS: &str = "JWT_LEEWAY_SECONDS";
    /// Default for [`JWT_LEEWAY_SECONDS`].
    pub const JWT_LEEWAY_SECONDS_DEFAULT: u64 = 30;
    /// `json` (containers) or `pretty` (a terminal).
    pub const LOG_FORMAT: &str = "LOG_FORMAT";
    /// `echo`, `elevenlabs` or `none`; default `elevenlabs` when an agent is configured,
    /// else `echo`.
    pub const AGENT: &str = "AGENT";
    /// Delay of the echo agent.
    pub const ECHO_DELAY_MS: &str = "ECHO_DELAY_MS";
    /// Default for [`ECHO_DELAY_MS`].
    pub const ECHO_DELAY_MS_DEFAULT: u64 = 200;
    /// Explicit ElevenLabs conversation URL.
    pub const ELEVENLABS_WS_URL: &str = "ELEVENLABS_WS_URL";
    /// ElevenLabs agent id.
    pub const ELEVENLABS_AGENT_ID: &str = "ELEVENLABS_AGENT_ID";
    /// ElevenLabs API key (signed URLs for private agents).
    pub const ELEVENLABS_API_KEY: &str = "ELEVENLABS_API_KEY";
    /// ElevenLabs REST base for the signed-URL request.
    pub const ELEVENLABS_API_BASE: &str = "ELEVENLABS_API_BASE";
    /// Time allowed for one agent connect attempt.
    pub const ELEVENLABS_CONNECT_TIMEOUT_MS: &str = "ELEVENLABS_CONNECT_TIMEOUT_MS";
    /// Default for [`ELEVENLABS_CONNECT_TIMEOUT_MS`].
    pub const ELEVENLABS_CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
    /// Agent connect retries after the first attempt.
    pub const ELEVENLABS_CONNECT_RETRIES: &str = "ELEVENLABS_CONNECT_RETRIES";
    /// Default for [`ELEVENLABS_CONNECT_RETRIES`].
    pub const ELEVENLABS_CONNECT_RETRIES_DEFAULT: u32 = 2;
    /// Legacy: caller audio as raw PCM16LE 16 kHz binary frames.
    pub const EL_FORWARD_BINARY: &str = "EL_FORWARD_BINARY";
    /// How far ahead of playback agent audio is released to Twilio.
    pub const PLAYOUT_LEAD_MS: &str = "PLAYOUT_LEAD_MS";
    /// Default for [`PLAYOUT_LEAD_MS`].
    pub const PLAYOUT_LEAD_MS_DEFAULT: u64 = 200;
    /// Most agent audio held per call before it is dropped.
    pub const PLAYOUT_MAX_MS: &str = "PLAYOUT_MAX_MS";
    /// Default for [`PLAYOUT_MAX_MS`].
    pub const PLAYOUT_MAX_MS_DEFAULT: u64 = 30_000;
    /// `true`: hold ECS task scale-in protection while calls are live.
    pub const TASK_PROTECTION: &str = "TASK_PROTECTION";
    /// `ExpiresInMinutes` of each protection.
    pub const TASK_PROTECTION_MINUTES: &str = "TASK_PROTECTION_MINUTES";
    /// Default for [`TASK_PROTECTION_MINUTES`].
    pub const TASK_PROTECTION_MINUTES_DEFAULT: u32 = 60;
    /// The ECS agent endpoint (injected by ECS).
    pub const ECS_AGENT_URI: &str = "ECS_AGENT_URI";
    /// Interval of CloudWatch EMF lines with the active-call count (`0`: off).
    pub const EMF_INTERVAL_MS: &str = "EMF_INTERVAL_MS";
    /// CloudWatch namespace of the EMF metric.
    pub const EMF_NAMESPACE: &str = "EMF_NAMESPACE";
    /// Default for [`EMF_NAMESPACE`].
    pub const EMF_NAMESPACE_DEFAULT: &str = "MediaOrchestrator";
    /// `ServiceName` dimension of the EMF metric.
    pub const EMF_SERVICE_NAME: &str = "EMF_SERVICE_NAME";
    /// Default for [`EMF_SERVICE_NAME`].
    pub const EMF_SERVICE_NAME_DEFAULT: &str = "media-ws";
    /// `true` to require Twilio's `x-twilio-signature` on the upgrade as well as the token.
    pub const VERIFY_TWILIO_SIGNATURE: &str = "VERIFY_TWILIO_SIGNATURE";
    /// Default for [`VERIFY_TWILIO_SIGNATURE`].
    pub const VERIFY_TWILIO_SIGNATURE_DEFAULT: bool = false;
    /// Twilio account Auth Token (value or `ssm:` reference): the key of Twilio's signatures.
    pub const TWILIO_AUTH_TOKEN: &str = "TWILIO_AUTH_TOKEN";
    /// Public origin Twilio connects to (`wss://host[:port]`, or the same followed by
    /// `WS_PATH`, i.e. the Lambda's `STREAM_URL_BASE`); the request path is appended to it to
    /// rebuild the signed URL. Unset: `wss://<Host header><path>`.
    pub const PUBLIC_STREAM_BASE: &str = "PUBLIC_STREAM_BASE";
    /// `true` lets a server whose agent costs money (`AGENT=elevenlabs`) run without
    /// stream authentication; without it such a server refuses to start.
    pub const ALLOW_UNAUTHENTICATED: &str = "ALLOW_UNAUTHENTICATED";
    /// The Twilio account (`AC…`) whose streams are accepted; a `start` from another account
    /// is closed with 1008.
    pub const TWILIO_ACCOUNT_SID: &str = "TWILIO_ACCOUNT_SID";
    /// DynamoDB table of the fleet-wide call registry (single-use tokens, one stream per
    /// CallSid across every task). Unset: per-process checks only.
    pub const CALL_REGISTRY_TABLE: &str = "CALL_REGISTRY_TABLE";
    /// How long a CallSid claim lives without renewal (renewed at a third of it).
    pub const CALL_REGISTRY_LEASE_SECONDS: &str = "CALL_REGISTRY_LEASE_SECONDS";
    /// Default for [`CALL_REGISTRY_LEASE_SECONDS`].
    pub const CALL_REGISTRY_LEASE_SECONDS_DEFAULT: u64 = 60;
    /// Time allowed for one registry request (a slower one counts as an outage).
    pub const CALL_REGISTRY_TIMEOUT_MS: &str = "CALL_REGISTRY_TIMEOUT_MS";
    /// Default for [`CALL_REGISTRY_TIMEOUT_MS`].
    pub const CALL_REGISTRY_TIMEOUT_MS_DEFAULT: u64 = 2_000;
    /// How long a secret read from SSM is used before it is fetched again.
    pub const SECRETS_TTL_SECONDS: &str = "SECRETS_TTL_SECONDS";
    /// Default for [`SECRETS_TTL_SECONDS`].
    pub const SECRETS_TTL_SECONDS_DEFAULT: u64 = 300;
}

/// Errors found while reading configuration. Messages name the variable, never a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A variable is set but its value cannot be used.
    #[error("invalid {var}: {reason}")]
    Invalid {
        /// The variable's name.
        var: &'static str,
        /// What is wrong with it (never the value of a secret).
        reason: String,
    },
}

/// Where configuration values come from: the process environment, or a map in tests.
pub trait Source {
    /// The value of `key`, if set. An empty value counts as unset.
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Env;

impl Source for Env {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).filter(|v| !v.is_empty()).cloned()
    }
}

impl Source for HashMap<&str, &str> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key)
            .filter(|v| !v.is_empty())
            .map(|v| (*v).to_string())
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (CloudWatch, containers).
    Json,
    /// Human-readable lines for a terminal.
    Pretty,
}

/// How stream handshakes are authenticated. Secrets are values or `ssm:` references,
/// resolved by [`crate::secrets::Secrets`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// No token required (neither `MEDIA_AUTH_TOKEN` nor `MEDIA_SHARED_SECRET` set).
    Open,
    /// A static token, compared in constant time.
    StaticToken(SecretSpec),
    /// HS256 JWTs; the secret is a comma-separated list: the first signs, any verifies
    /// (rotation). A plain value is checked for empty entries here.
    Jwt(SecretSpec),
}

/// Twilio's signature on the WebSocket upgrade (`VERIFY_TWILIO_SIGNATURE=true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSignatureConfig {
    /// The account Auth Token.
    pub auth_token: SecretSpec,
    /// `wss://host[:port]` the signed URL starts with; `None`: from the `Host` header.
    pub public_base: Option<String>,
}

/// Which agent answers calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentKind {
    /// No agent: frames are counted only (the seed's behaviour).
    None,
    /// The built-in echo, after this delay.
    Echo(Duration),
    /// An ElevenLabs conversational agent.
    ElevenLabs(ElevenLabsConfig),
}

/// Settings of the `media-ws` server.
#[derive(Debug, Clone)]
pub struct Config {
    /// TCP port (0 = any free port).
    pub port: u16,
    /// WebSocket path, starting with `/` and without a trailing `/`.
    pub ws_path: String,
    /// Handshake authentication.
    pub auth: AuthMode,
    /// Clock skew tolerated on JWT times.
    pub jwt_leeway: Duration,
    /// No message from the peer for this long closes the call.
    pub idle_timeout: Duration,
    /// WebSocket ping interval.
    pub keepalive: Duration,
    /// Per-connection outbound queue bound, in bytes.
    pub max_buffered_bytes: usize,
    /// Largest decoded media payload, in bytes.
    pub max_media_payload_bytes: usize,
    /// Concurrent call limit.
    pub max_calls: usize,
    /// How long calls may run on after SIGTERM.
    pub drain_timeout: Duration,
    /// Time allowed for a client to send its HTTP request after connecting.
    pub handshake_timeout: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// The agent.
    pub agent: AgentKind,
    /// How far ahead of playback agent audio is released to Twilio.
    pub playout_lead: Duration,
    /// Most agent audio held per call.
    pub playout_max: Duration,
    /// ECS task scale-in protection while calls are live.
    pub task_protection: Option<TaskProtection>,
    /// CloudWatch EMF publishing of the active-call count.
    pub emf: Option<Emf>,
    /// Verify Twilio's signature on upgrades, when configured.
    pub stream_signature: Option<StreamSignatureConfig>,
    /// Lifetime of secrets read from SSM.
    pub secrets_ttl: Duration,
    /// The only Twilio account whose streams are accepted, when set.
    pub twilio_account_sid: Option<String>,
    /// The fleet-wide call registry, when configured.
    pub call_registry: Option<CallRegistryConfig>,
}

/// The DynamoDB call registry (`CALL_REGISTRY_TABLE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRegistryConfig {
    /// Table name (or ARN).
    pub table: String,
    /// Lifetime of an unrenewed CallSid claim.
    pub lease: Duration,
    /// Time allowed for one request.
    pub timeout: Duration,
}

impl Config {
    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first variable whose value cannot be used.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Env)
    }

    /// Reads the configuration from any [`Source`].
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first variable whose value cannot be used.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        use env::*;
        let ws_path = src
            .get(WS_PATH)
            .unwrap_or_else(|| WS_PATH_DEFAULT.to_string());
        if !ws_path.starts_with('/') || ws_path.len() < 2 || ws_path.ends_with('/') {
            return Err(invalid(
                WS_PATH,
                "must start with '/', not end with '/', and not be '/' alone",
            ));
        }
        if ws_path.contains(['?', '#', ' ']) {
            return Err(invalid(WS_PATH, "must be a plain path"));
        }
        let auth = match (src.get(MEDIA_SHARED_SECRET), src.get(MEDIA_AUTH_TOKEN)) {
            (Some(raw), _) => {
                let spec = secret_spec(MEDIA_SHARED_SECRET, &raw)?;
                if let SecretSpec::Value(list) = &spec {
                    parse_secret_list(MEDIA_SHARED_SECRET, list.expose())?;
                }
                AuthMode::Jwt(spec)
            }
            (None, Some(token)) => AuthMode::StaticToken(secret_spec(MEDIA_AUTH_TOKEN, &token)?),
            (None, None) => AuthMode::Open,
        };
        let agent = agent(src)?;
        if matches!(agent, AgentKind::ElevenLabs(_))
            && auth == AuthMode::Open
            && !boolean(src, ALLOW_UNAUTHENTICATED, false)?
        {
            return Err(invalid(
                MEDIA_SHARED_SECRET,
                "required with AGENT=elevenlabs (every stream would open a paid agent \
                 conversation for anyone): set MEDIA_SHARED_SECRET (or MEDIA_AUTH_TOKEN), \
                 or ALLOW_UNAUTHENTICATED=true to run open on purpose",
            ));
        }
        let stream_signature = stream_signature(src, &ws_path)?;
        let keepalive = millis(src, KEEPALIVE_MS, KEEPALIVE_MS_DEFAULT)?;
        let idle_timeout = millis(src, IDLE_TIMEOUT_MS, IDLE_TIMEOUT_MS_DEFAULT)?;
        Ok(Self {
            port: number(src, PORT, PORT_DEFAULT, 0)?,
            ws_path,
            auth,
            jwt_leeway: Duration::from_secs(number(
                src,
                JWT_LEEWAY_SECONDS,
                JWT_LEEWAY_SECONDS_DEFAULT,
                0,
            )?),
            idle_timeout,
            keepalive,
            max_buffered_bytes: number(src, MAX_BUFFERED_BYTES, MAX_BUFFERED_BYTES_DEFAULT, 1024)?,
            max_media_payload_bytes: number(
                src,
                MAX_MEDIA_PAYLOAD_BYTES,
                MAX_MEDIA_PAYLOAD_BYTES_DEFAULT,
                160,
            )?,
            max_calls: number(src, MAX_CALLS, MAX_CALLS_DEFAULT, 1)?,
            drain_timeout: Duration::from_millis(number(
                src,
                DRAIN_TIMEOUT_MS,
                DRAIN_TIMEOUT_MS_DEFAULT,
                0,
            )?),
            handshake_timeout: millis(src, HANDSHAKE_TIMEOUT_MS, HANDSHAKE_TIMEOUT_MS_DEFAULT)?,
            log_format: log_format(src)?,
            agent,
            playout_lead: Duration::from_millis(number(
                src,
                PLAYOUT_LEAD_MS,
                PLAYOUT_LEAD_MS_DEFAULT,
                20,
            )?),
            playout_max: Duration::from_millis(number(
                src,
                PLAYOUT_MAX_MS,
                PLAYOUT_MAX_MS_DEFAULT,
                1_000,
            )?),
            task_protection: task_protection(src)?,
            emf: emf(src)?,
            stream_signature,
            secrets_ttl: Duration::from_secs(number(
                src,
                SECRETS_TTL_SECONDS,
                SECRETS_TTL_SECONDS_DEFAULT,
                1,
            )?),
            twilio_account_sid: twilio_account_sid(src)?,
            call_registry: call_registry(src)?,
        })
    }

    /// Reads only `LOG_FORMAT`, so a binary can set up logging before the rest is validated.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when the value is neither `json` nor `pretty`.
    pub fn log_format_from_env() -> Result<LogFormat, ConfigError> {
        log_format(&Env)
    }
}

fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.into(),
    }
}

fn agent(src: &dyn Source) -> Result<AgentKind, ConfigError> {
    use env::*;
    let el = ElevenLabsConfig {
        ws_url: src.get(ELEVENLABS_WS_URL),
        agent_id: src.get(ELEVENLABS_AGENT_ID),
        api_key: src
            .get(ELEVENLABS_API_KEY)
            .map(|raw| secret_spec(ELEVENLABS_API_KEY, &raw))
            .transpose()?,
        api_base: src
            .get(ELEVENLABS_API_BASE)
            .unwrap_or_else(|| crate::elevenlabs::DEFAULT_API_BASE.to_string()),
        connect_timeout: millis(
            src,
            ELEVENLABS_CONNECT_TIMEOUT_MS,
            ELEVENLABS_CONNECT_TIMEOUT_MS_DEFAULT,
        )?,
        connect_retries: number(
            src,
            ELEVENLABS_CONNECT_RETRIES,
            ELEVENLABS_CONNECT_RETRIES_DEFAULT,
            0,
        )?,
        forward_binary: boolean(src, EL_FORWARD_BINARY, false)?,
        ..ElevenLabsConfig::default()
    };
    for (var, url, schemes) in [
        (ELEVENLABS_WS_URL, el.ws_url.as_deref(), ["ws://", "wss://"]),
        (
            ELEVENLABS_API_BASE,
            Some(el.api_base.as_str()),
            ["http://", "https://"],
        ),
    ] {
        if url.is_some_and(|u| !schemes.iter().any(|s| u.starts_with(s))) {
            return Err(invalid(
                var,
                format!("must start with {}", schemes.join(" or ")),
            ));
        }
    }
    match src.get(AGENT).as_deref() {
        Some("none") => Ok(AgentKind::None),
        Some("echo") => Ok(AgentKind::Echo(millis(
            src,
            ECHO_DELAY_MS,
            ECHO_DELAY_MS_DEFAULT,
        )?)),
        Some("elevenlabs") if el.is_configured() => Ok(AgentKind::ElevenLabs(el)),
        Some("elevenlabs") => Err(invalid(
            AGENT,
            "elevenlabs needs ELEVENLABS_AGENT_ID or ELEVENLABS_WS_URL",
        )),
        None if el.is_configured() => Ok(AgentKind::ElevenLabs(el)),
        None => Ok(AgentKind::Echo(millis(
            src,
            ECHO_DELAY_MS,
            ECHO_DELAY_MS_DEFAULT,
        )?)),
        Some(_) => Err(invalid(AGENT, "expected 'echo', 'elevenlabs' or 'none'")),
    }
}

fn task_protection(src: &dyn Source) -> Result<Option<TaskProtection>, ConfigError> {
    use env::*;
    if !boolean(src, TASK_PROTECTION, false)? {
        return Ok(None);
    }
    let minutes = number(
        src,
        TASK_PROTECTION_MINUTES,
        TASK_PROTECTION_MINUTES_DEFAULT,
        1,
    )?;
    if minutes > 2880 {
        return Err(invalid(TASK_PROTECTION_MINUTES, "must be at most 2880"));
    }
    let agent_uri = src.get(ECS_AGENT_URI).ok_or_else(|| {
        invalid(
            TASK_PROTECTION,
            "needs ECS_AGENT_URI (set by ECS inside a task)",
        )
    })?;
    Ok(Some(TaskProtection { agent_uri, minutes }))
}

fn emf(src: &dyn Source) -> Result<Option<Emf>, ConfigError> {
    use env::*;
    let interval_ms: u64 = number(src, EMF_INTERVAL_MS, 0, 0)?;
    if interval_ms == 0 {
        return Ok(None);
    }
    Ok(Some(Emf {
        interval: Duration::from_millis(interval_ms),
        namespace: src
            .get(EMF_NAMESPACE)
            .unwrap_or_else(|| EMF_NAMESPACE_DEFAULT.to_string()),
        service_name: src
            .get(EMF_SERVICE_NAME)
            .unwrap_or_else(|| EMF_SERVICE_NAME_DEFAULT.to_string()),
    }))
}

fn log_format(src: &dyn Source) -> Result<LogFormat, ConfigError> {
    match src.get(env::LOG_FORMAT).as_deref() {
        None | Some("json") => Ok(LogFormat::Json),
        Some("pretty") => Ok(LogFormat::Pretty),
        Some(_) => Err(invalid(env::LOG_FORMAT, "expected 'json' or 'pretty'")),
    }
}

/// Reads a secret variable as a value or an `ssm:` reference.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `var` when the reference is malformed.
pub fn secret_spec(var: &'static str, raw: &str) -> Result<SecretSpec, ConfigError> {
    SecretSpec::parse(raw).map_err(|e| invalid(var, e.to_string()))
}

/// Parses a boolean variable (`true`/`false`, `1`/`0`, `yes`/`no`, any case).
///
/// # Errors
/// [`ConfigError::Invalid`] naming `var` for anything else.
pub fn boolean(src: &dyn Source, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    let Some(raw) = src.get(var) else {
        return Ok(default);
    };
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(invalid(var, "expected 'true' or 'false'")),
    }
}

/// `TWILIO_ACCOUNT_SID`: `AC` and 32 hex digits.
///
/// # Errors
/// [`ConfigError::Invalid`] for anything else.
pub fn twilio_account_sid(src: &dyn Source) -> Result<Option<String>, ConfigError> {
    let Some(sid) = src.get(env::TWILIO_ACCOUNT_SID) else {
        return Ok(None);
    };
    let sid = sid.trim().to_string();
    let hex = sid.get(2..).unwrap_or_default();
    if !sid.starts_with("AC") || hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            env::TWILIO_ACCOUNT_SID,
            "expected AC followed by 32 hex digits",
        ));
    }
    Ok(Some(sid))
}

fn call_registry(src: &dyn Source) -> Result<Option<CallRegistryConfig>, ConfigError> {
    use env::*;
    let Some(table) = src.get(CALL_REGISTRY_TABLE) else {
        return Ok(None);
    };
    let lease = number(
        src,
        CALL_REGISTRY_LEASE_SECONDS,
        CALL_REGISTRY_LEASE_SECONDS_DEFAULT,
        3,
    )?;
    Ok(Some(CallRegistryConfig {
        table: table.trim().to_string(),
        lease: Duration::from_secs(lease),
        timeout: millis(
            src,
            CALL_REGISTRY_TIMEOUT_MS,
            CALL_REGISTRY_TIMEOUT_MS_DEFAULT,
        )?,
    }))
}

/// The origin of a `PUBLIC_STREAM_BASE`: `wss://host[:port]`, with a trailing `ws_path`
/// (the value operators also give the Lambda as `STREAM_URL_BASE`) or `/` removed.
fn public_stream_origin(base: &str, ws_path: &str) -> Option<String> {
    let base = base.trim().trim_end_matches('/');
    let base = base.strip_suffix(ws_path).unwrap_or(base);
    let host = base.strip_prefix("wss://")?;
    (!host.is_empty() && !host.contains(['/', '?', '#', ' ', '@'])).then(|| base.to_string())
}

fn stream_signature(
    src: &dyn Source,
    ws_path: &str,
) -> Result<Option<StreamSignatureConfig>, ConfigError> {
    use env::*;
    if !boolean(
        src,
        VERIFY_TWILIO_SIGNATURE,
        VERIFY_TWILIO_SIGNATURE_DEFAULT,
    )? {
        return Ok(None);
    }
    let Some(raw) = src.get(TWILIO_AUTH_TOKEN) else {
        return Err(invalid(
            TWILIO_AUTH_TOKEN,
            "required when VERIFY_TWILIO_SIGNATURE is true",
        ));
    };
    let public_base = match src.get(PUBLIC_STREAM_BASE) {
        None => None,
        Some(base) => Some(public_stream_origin(&base, ws_path).ok_or_else(|| {
            invalid(
                PUBLIC_STREAM_BASE,
                format!(
                    "expected the public wss:// origin Twilio dials, wss://host[:port] or \
                     wss://host[:port]{ws_path} (the STREAM_URL_BASE given to media-lambda), \
                     e.g. wss://media.example.com{ws_path}"
                ),
            )
        })?),
    };
    Ok(Some(StreamSignatureConfig {
        auth_token: secret_spec(TWILIO_AUTH_TOKEN, &raw)?,
        public_base,
    }))
}

/// Parses a non-secret integer variable, at least `min`.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `var` when it is not a whole number of at least `min`.
pub fn number<T>(src: &dyn Source, var: &'static str, default: T, min: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = src.get(var) else {
        return Ok(default);
    };
    let value: T = raw.trim().parse().map_err(|_| {
        invalid(
            var,
            format!("expected a whole number, got {:?}", truncate(&raw)),
        )
    })?;
    if value < min {
        return Err(invalid(var, format!("must be at least {min}")));
    }
    Ok(value)
}

/// Parses a duration in milliseconds that must be positive.
fn millis(src: &dyn Source, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
    number(src, var, default, 1).map(Duration::from_millis)
}

fn truncate(raw: &str) -> String {
    raw.chars().take(32).collect()
}

/// Splits a comma-separated secret list; empty entries are an error (never echo the values).
///
/// # Errors
/// [`ConfigError::Invalid`] naming `var` when an entry is empty.
pub fn parse_secret_list(var: &'static str, raw: &str) -> Result<Vec<Secret<String>>, ConfigError> {
    let parts: Vec<&str> = raw.split(',').map(str::trim).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(invalid(var, "empty entry in comma-separated list"));
    }
    Ok(parts
        .into_iter()
        .map(|p| Secret::new(p.to_string()))
        .collect())
}

#[cfg(test)]
mod tests;
