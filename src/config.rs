//! Typed configuration read once from the environment before anything binds. Owns variable
//! names, defaults and validation; it does not resolve `ssm:` references (see `secrets`).

use std::time::Duration;

use crate::ecs::{Emf, TaskProtection};
use crate::elevenlabs::ElevenLabsConfig;
use crate::relay::StreamConfig;
use crate::secrets::SecretSpec;

mod call_control;
pub mod env;
mod parse;

pub use call_control::{rest as twilio_rest, CallControlConfig};

pub use parse::{boolean, number, parse_secret_list, secret_spec, Env, Source};
use parse::{invalid, millis};

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

/// Settings of the `media-ws` server, by concern: each part is what one component takes
/// (the server, every call's relay, the agent, call control, the registry).
#[derive(Debug, Clone)]
pub struct Config {
    /// The HTTP/WebSocket server: port, path, handshake, connection guards, drain.
    pub server: ServerConfig,
    /// What every call's relay holds Twilio's stream to (payload size, playout, idle,
    /// keepalive, the account).
    pub stream: StreamConfig,
    /// The agent.
    pub agent: AgentKind,
    /// Log format.
    pub log_format: LogFormat,
    /// ECS task scale-in protection while calls are live.
    pub task_protection: Option<TaskProtection>,
    /// CloudWatch EMF publishing of the active-call count.
    pub emf: Option<Emf>,
    /// Lifetime of secrets read from SSM.
    pub secrets_ttl: Duration,
    /// Call events on EventBridge (`CALL_EVENTS_BUS`), when configured.
    pub call_events: Option<crate::bus::BusConfig>,
    /// The fleet-wide call registry, when configured.
    pub call_registry: Option<CallRegistryConfig>,
    /// Fleet-wide admission against the agent plan (`AGENT_CONCURRENCY_LIMIT`).
    pub admission: Option<Admission>,
    /// Where a call ElevenLabs refused for concurrency is sent (`OVERFLOW_*`).
    pub overflow: Overflow,
    /// Endings, transfers, the dead-agent timers and the keypad.
    pub call_control: CallControlConfig,
}

/// The HTTP/WebSocket server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// TCP port (0 = any free port).
    pub port: u16,
    /// WebSocket path, starting with `/` and without a trailing `/`.
    pub ws_path: String,
    /// Handshake authentication.
    pub auth: AuthMode,
    /// Clock skew tolerated on JWT times.
    pub jwt_leeway: Duration,
    /// Verify Twilio's signature on upgrades, when configured.
    pub stream_signature: Option<StreamSignatureConfig>,
    /// Time allowed for a client to send its HTTP request after connecting.
    pub handshake_timeout: Duration,
    /// Per-connection outbound queue bound, in bytes.
    pub max_buffered_bytes: usize,
    /// Concurrent call limit.
    pub max_calls: usize,
    /// How long calls may run on after SIGTERM (they are asked to end gracefully before it).
    pub drain_timeout: Duration,
}

/// Fleet-wide admission against the agent plan (`AGENT_CONCURRENCY_LIMIT`), both binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Most agent conversations at once across the fleet.
    pub limit: u32,
    /// What a caller over the limit gets.
    pub overflow: Overflow,
}

/// The overflow TwiML's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overflow {
    /// `OVERFLOW_NUMBER`: people who take the calls the agent cannot.
    pub number: Option<String>,
    /// `OVERFLOW_MESSAGE`: said before the hang-up when there is no number.
    pub message: String,
}

impl Default for Overflow {
    fn default() -> Self {
        Self {
            number: None,
            message: env::OVERFLOW_MESSAGE_DEFAULT.to_string(),
        }
    }
}

/// `OVERFLOW_NUMBER` and `OVERFLOW_MESSAGE`.
///
/// # Errors
/// [`ConfigError::Invalid`] for a number that is not E.164.
pub fn overflow(src: &dyn Source) -> Result<Overflow, ConfigError> {
    use env::*;
    let number = src.get(OVERFLOW_NUMBER).map(|n| n.trim().to_string());
    if number
        .as_deref()
        .is_some_and(|n| !crate::twilio::number::is_e164(n))
    {
        return Err(invalid(OVERFLOW_NUMBER, "expected an E.164 number"));
    }
    Ok(Overflow {
        number,
        message: src
            .get(OVERFLOW_MESSAGE)
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| OVERFLOW_MESSAGE_DEFAULT.to_string()),
    })
}

/// `AGENT_CONCURRENCY_LIMIT` with the overflow settings; `None` when unset (no limit). The
/// slots live in the call-registry table, so `registry` must be set.
///
/// # Errors
/// [`ConfigError::Invalid`] for a limit that is not a positive number, or one without
/// `CALL_REGISTRY_TABLE`.
pub fn admission(
    src: &dyn Source,
    registry: Option<&CallRegistryConfig>,
) -> Result<Option<Admission>, ConfigError> {
    use env::*;
    let Some(raw) = src.get(AGENT_CONCURRENCY_LIMIT) else {
        return Ok(None);
    };
    let limit = raw
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| invalid(AGENT_CONCURRENCY_LIMIT, "expected a number from 1 to 10000"))?;
    if registry.is_none() {
        return Err(invalid(
            AGENT_CONCURRENCY_LIMIT,
            "needs CALL_REGISTRY_TABLE: calls are counted there across every task and the Lambda",
        ));
    }
    Ok(Some(Admission {
        limit,
        overflow: overflow(src)?,
    }))
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
        let registry = call_registry(src)?;
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
        let server = ServerConfig {
            port: number(src, PORT, PORT_DEFAULT, 0)?,
            ws_path,
            auth,
            jwt_leeway: Duration::from_secs(number(
                src,
                JWT_LEEWAY_SECONDS,
                JWT_LEEWAY_SECONDS_DEFAULT,
                0,
            )?),
            stream_signature,
            handshake_timeout: millis(src, HANDSHAKE_TIMEOUT_MS, HANDSHAKE_TIMEOUT_MS_DEFAULT)?,
            max_buffered_bytes: number(src, MAX_BUFFERED_BYTES, MAX_BUFFERED_BYTES_DEFAULT, 1024)?,
            max_calls: number(src, MAX_CALLS, MAX_CALLS_DEFAULT, 1)?,
            drain_timeout: Duration::from_millis(number(
                src,
                DRAIN_TIMEOUT_MS,
                DRAIN_TIMEOUT_MS_DEFAULT,
                0,
            )?),
        };
        let stream = StreamConfig {
            max_payload_bytes: number(
                src,
                MAX_MEDIA_PAYLOAD_BYTES,
                MAX_MEDIA_PAYLOAD_BYTES_DEFAULT,
                160,
            )?,
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
            idle_timeout: millis(src, IDLE_TIMEOUT_MS, IDLE_TIMEOUT_MS_DEFAULT)?,
            keepalive: millis(src, KEEPALIVE_MS, KEEPALIVE_MS_DEFAULT)?,
            account_sid: twilio_account_sid(src)?,
        };
        Ok(Self {
            server,
            stream,
            agent,
            log_format: log_format(src)?,
            task_protection: task_protection(src)?,
            emf: emf(src)?,
            secrets_ttl: Duration::from_secs(number(
                src,
                SECRETS_TTL_SECONDS,
                SECRETS_TTL_SECONDS_DEFAULT,
                1,
            )?),
            admission: admission(src, registry.as_ref())?,
            overflow: overflow(src)?,
            call_registry: registry,
            call_events: call_events(src),
            call_control: CallControlConfig::from_source(src)?,
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
        connect_deadline: millis(
            src,
            ELEVENLABS_CONNECT_DEADLINE_MS,
            ELEVENLABS_CONNECT_DEADLINE_MS_DEFAULT,
        )?,
        forward_binary: boolean(src, EL_FORWARD_BINARY, false)?,
        ..ElevenLabsConfig::default()
    };
    // Caller audio and the xi-api-key: in clear only to a loopback host (a local fake).
    if let Some(url) = el.ws_url.as_deref() {
        parse::secure_origin(ELEVENLABS_WS_URL, url, "wss://", "ws://")?;
    }
    parse::secure_origin(ELEVENLABS_API_BASE, &el.api_base, "https://", "http://")?;
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

/// `CALL_EVENTS_BUS`: where call events go; `None` when unset or blank.
pub fn call_events(src: &dyn Source) -> Option<crate::bus::BusConfig> {
    let bus = src.get(env::CALL_EVENTS_BUS)?.trim().to_string();
    (!bus.is_empty()).then(|| crate::bus::BusConfig {
        bus,
        queue: 10_000,
        timeout: Duration::from_secs(5),
    })
}

/// The call registry's settings (`CALL_REGISTRY_TABLE` and its tuning); `None` when unset.
///
/// # Errors
/// [`ConfigError::Invalid`] for an unusable lease or timeout.
pub fn call_registry(src: &dyn Source) -> Result<Option<CallRegistryConfig>, ConfigError> {
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

#[cfg(test)]
mod tests;
