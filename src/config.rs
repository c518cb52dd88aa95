//! Typed configuration read once from the environment before anything binds. Owns variable
//! names, defaults and validation; it does not resolve `ssm:` references (see `secrets`).

use std::collections::HashMap;
use std::time::Duration;

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
    /// `true` to require Twilio's `x-twilio-signature` on the upgrade as well as the token.
    pub const VERIFY_TWILIO_SIGNATURE: &str = "VERIFY_TWILIO_SIGNATURE";
    /// Default for [`VERIFY_TWILIO_SIGNATURE`].
    pub const VERIFY_TWILIO_SIGNATURE_DEFAULT: bool = false;
    /// Twilio account Auth Token (value or `ssm:` reference): the key of Twilio's signatures.
    pub const TWILIO_AUTH_TOKEN: &str = "TWILIO_AUTH_TOKEN";
    /// Public origin Twilio connects to (`wss://host[:port]`); the request path is appended
    /// to rebuild the signed URL. Unset: `wss://<Host header><path>`.
    pub const PUBLIC_STREAM_BASE: &str = "PUBLIC_STREAM_BASE";
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
    /// Verify Twilio's signature on upgrades, when configured.
    pub stream_signature: Option<StreamSignatureConfig>,
    /// Lifetime of secrets read from SSM.
    pub secrets_ttl: Duration,
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
            stream_signature: stream_signature(src)?,
            secrets_ttl: Duration::from_secs(number(
                src,
                SECRETS_TTL_SECONDS,
                SECRETS_TTL_SECONDS_DEFAULT,
                1,
            )?),
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

fn stream_signature(src: &dyn Source) -> Result<Option<StreamSignatureConfig>, ConfigError> {
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
        Some(base) => {
            let base = base.trim().trim_end_matches('/').to_string();
            let host = base.strip_prefix("wss://").unwrap_or_default();
            if host.is_empty() || host.contains(['/', '?', '#', ' ', '@']) {
                return Err(invalid(
                    PUBLIC_STREAM_BASE,
                    "expected wss://host[:port] without a path",
                ));
            }
            Some(base)
        }
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
