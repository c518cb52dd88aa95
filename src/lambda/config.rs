//! Settings of the `media-lambda` function, read once per cold start. Secret variables are
//! values or `ssm:` references (resolved by [`crate::secrets`], not here).

use std::time::Duration;

use std::sync::Arc;

use crate::config::{self, CallRegistryConfig, ConfigError, Env, LogFormat, Source};
use crate::secrets::SecretSpec;
use crate::twilio::number::is_e164;
use crate::twilio::number::Allowlist;
use crate::twilio::rest::RestConfig;
use crate::twilio::twiml::Fallback;

/// Environment variable names and their defaults: `X_DEFAULT` is `X`'s value when unset.
#[allow(missing_docs)]
pub mod env {
    /// Bearer key backend callers present to `POST /token` (value or `ssm:` reference).
    pub const MINT_API_KEY: &str = "MINT_API_KEY";
    /// HS256 secret list shared with `media-ws`; the first entry signs.
    pub const MEDIA_SHARED_SECRET: &str = crate::config::env::MEDIA_SHARED_SECRET;
    /// Twilio account Auth Token: the key of `X-Twilio-Signature` (HMAC-SHA1).
    pub const TWILIO_AUTH_TOKEN: &str = crate::config::env::TWILIO_AUTH_TOKEN;
    /// Optional `AC…` the webhook's `AccountSid` must equal.
    pub const TWILIO_ACCOUNT_SID: &str = "TWILIO_ACCOUNT_SID";
    /// `wss://host/path` of the stream; tokens are appended as `/jwt/<token>`.
    pub const STREAM_URL_BASE: &str = "STREAM_URL_BASE";
    /// The webhook URL exactly as configured in Twilio (scheme, host, path, query). Unset:
    /// rebuilt from the request (`https://` + Host + raw path + raw query).
    pub const PUBLIC_WEBHOOK_URL: &str = "PUBLIC_WEBHOOK_URL";
    /// Lifetime of the token `/twiml` embeds, and `/token`'s default.
    pub const TOKEN_TTL_SECONDS: &str = "TOKEN_TTL_SECONDS";
    /// Long enough for Twilio to connect.
    pub const TOKEN_TTL_SECONDS_DEFAULT: u64 = 300;
    /// Upper bound of `ttlSeconds` in `/token` requests.
    pub const TOKEN_MAX_TTL_SECONDS: &str = "TOKEN_MAX_TTL_SECONDS";
    pub const TOKEN_MAX_TTL_SECONDS_DEFAULT: u64 = 3600;
    /// Comma-separated webhook form fields copied into `<Parameter>`s.
    pub const TWIML_PARAMETERS: &str = "TWIML_PARAMETERS";
    /// Identifiers only, no phone numbers.
    pub const TWIML_PARAMETERS_DEFAULT: &str = "CallSid,AccountSid,Direction";
    /// Text of a `<Say>` after `</Connect>` (played when the stream ends).
    pub const FALLBACK_SAY: &str = "FALLBACK_SAY";
    /// URL of a `<Redirect>` after `</Connect>` (and after the `<Say>`).
    pub const FALLBACK_REDIRECT_URL: &str = "FALLBACK_REDIRECT_URL";
    /// What a caller hears when a transfer was not answered (`/transfer/result`).
    pub const TRANSFER_FAILED_SAY: &str = "TRANSFER_FAILED_SAY";
    /// How long a secret read from SSM is used before it is fetched again.
    pub const SECRETS_TTL_SECONDS: &str = crate::config::env::SECRETS_TTL_SECONDS;
    pub const SECRETS_TTL_SECONDS_DEFAULT: u64 = crate::config::env::SECRETS_TTL_SECONDS_DEFAULT;
    /// Twilio REST origin for outbound calls and AMD actions (as in `media-ws`).
    pub const TWILIO_API_BASE: &str = crate::config::env::TWILIO_API_BASE;
    /// `From` of `POST /calls` when the request names none (E.164, a Twilio number).
    pub const OUTBOUND_FROM: &str = "OUTBOUND_FROM";
    /// This API's public base URL (`https://host[/stage]`), for the answer and AMD callback
    /// URLs of outbound calls and their signatures. Unset: rebuilt from the `/calls` request.
    pub const PUBLIC_API_URL: &str = "PUBLIC_API_URL";
    /// How long an outbound call's sealed context stays valid: queueing, ringing and answer
    /// must fit in it.
    pub const OUTBOUND_CONTEXT_TTL_SECONDS: &str = "OUTBOUND_CONTEXT_TTL_SECONDS";
    pub const OUTBOUND_CONTEXT_TTL_SECONDS_DEFAULT: u64 = 1800;
    /// Bearer key of `POST /calls` (value or `ssm:` reference), separate from
    /// [`MINT_API_KEY`]: a key that mints stream tokens cannot dial. Unset: no outbound calls.
    pub const CALLS_API_KEY: &str = "CALLS_API_KEY";
    /// The numbers `POST /calls` may dial: E.164 numbers or `+prefix*`, comma separated.
    /// Required with [`CALLS_API_KEY`].
    pub const OUTBOUND_ALLOWLIST: &str = "OUTBOUND_ALLOWLIST";
    /// The call-registry table (as in `media-ws`): `Idempotency-Key`s of `POST /calls`,
    /// Twilio's retried AMD callbacks, and agent admission.
    pub const CALL_REGISTRY_TABLE: &str = crate::config::env::CALL_REGISTRY_TABLE;
    /// EventBridge bus for `Call Completed` events (as in `media-ws`).
    pub const CALL_EVENTS_BUS: &str = crate::config::env::CALL_EVENTS_BUS;
    /// CloudWatch namespace of the outbound-call metrics (EMF lines on stdout).
    pub const EMF_NAMESPACE: &str = crate::config::env::EMF_NAMESPACE;
    pub const EMF_NAMESPACE_DEFAULT: &str = crate::config::env::EMF_NAMESPACE_DEFAULT;
}

/// Settings of `media-lambda`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaConfig {
    /// Bearer key of `/token`.
    pub mint_api_key: SecretSpec,
    /// Secret list (comma separated); the first entry signs.
    pub shared_secret: SecretSpec,
    /// Key of Twilio's webhook signatures.
    pub twilio_auth_token: SecretSpec,
    /// `AccountSid` the webhook must carry, when set.
    pub twilio_account_sid: Option<String>,
    /// `wss://…` without a trailing `/`.
    pub stream_url_base: String,
    /// The signed webhook URL, when not rebuilt from the request.
    pub public_webhook_url: Option<String>,
    /// Lifetime of `/twiml` tokens and `/token`'s default.
    pub token_ttl: Duration,
    /// Cap on `/token`'s `ttlSeconds`.
    pub token_max_ttl: Duration,
    /// Form fields copied into `<Parameter>`s, in order.
    pub twiml_parameters: Vec<String>,
    /// Verbs after `</Connect>`.
    pub fallback: Fallback,
    /// Said before the hang-up when a transfer was not answered.
    pub transfer_failed_say: String,
    /// Lifetime of secrets read from SSM.
    pub secrets_ttl: Duration,
    /// Log format (`LOG_FORMAT`).
    pub log_format: LogFormat,
    /// Twilio's REST API (outbound calls, AMD actions), when an account and credential are set.
    pub rest: Option<RestConfig>,
    /// Default `From` of outbound calls.
    pub outbound_from: Option<String>,
    /// Public base URL of this API, when not rebuilt from the request.
    pub public_api_url: Option<String>,
    /// Lifetime of an outbound call's sealed context.
    pub outbound_context_ttl: Duration,
    /// CloudWatch namespace of the outbound-call metrics.
    pub metric_namespace: String,
    /// Bearer key of `POST /calls`; `None`: outbound calls are off.
    pub calls_api_key: Option<SecretSpec>,
    /// What `POST /calls` may dial.
    pub outbound_allowlist: Arc<Allowlist>,
    /// The call-registry table.
    pub call_registry: Option<CallRegistryConfig>,
    /// Where `Call Completed` events go (`CALL_EVENTS_BUS`).
    pub call_events: Option<crate::bus::BusConfig>,
    /// Fleet-wide admission against the agent plan (`AGENT_CONCURRENCY_LIMIT`).
    pub admission: Option<config::Admission>,
}

impl LambdaConfig {
    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first variable that is missing or unusable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Env)
    }

    /// Reads the configuration from any [`Source`].
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first variable that is missing or unusable.
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        use env::*;
        let secret = |var: &'static str| -> Result<SecretSpec, ConfigError> {
            let raw = src.get(var).ok_or_else(|| invalid(var, "required"))?;
            config::secret_spec(var, &raw)
        };
        let mint_api_key = secret(MINT_API_KEY)?;
        let shared_secret = secret(MEDIA_SHARED_SECRET)?;
        if let SecretSpec::Value(list) = &shared_secret {
            config::parse_secret_list(MEDIA_SHARED_SECRET, list.expose())?;
        }
        let twilio_auth_token = secret(TWILIO_AUTH_TOKEN)?;

        let stream_url_base = src
            .get(STREAM_URL_BASE)
            .ok_or_else(|| invalid(STREAM_URL_BASE, "required"))?
            .trim()
            .trim_end_matches('/')
            .to_string();
        let host = stream_url_base.strip_prefix("wss://").unwrap_or_default();
        if host.is_empty() || host.starts_with('/') || host.contains(['?', '#', ' ', '@']) {
            return Err(invalid(
                STREAM_URL_BASE,
                "expected wss://host[/path] without query string",
            ));
        }
        let public_webhook_url = src.get(PUBLIC_WEBHOOK_URL).map(|u| u.trim().to_string());
        if let Some(url) = &public_webhook_url {
            if !is_http_url(url) {
                return Err(invalid(PUBLIC_WEBHOOK_URL, "expected an http(s):// URL"));
            }
        }
        let token_ttl = seconds(src, TOKEN_TTL_SECONDS, TOKEN_TTL_SECONDS_DEFAULT)?;
        let token_max_ttl = seconds(src, TOKEN_MAX_TTL_SECONDS, TOKEN_MAX_TTL_SECONDS_DEFAULT)?;
        if token_ttl > token_max_ttl {
            return Err(invalid(
                TOKEN_TTL_SECONDS,
                "must not exceed TOKEN_MAX_TTL_SECONDS",
            ));
        }
        let outbound_from = src.get(OUTBOUND_FROM).map(|s| s.trim().to_string());
        if outbound_from.as_deref().is_some_and(|n| !is_e164(n)) {
            return Err(invalid(OUTBOUND_FROM, "expected an E.164 number"));
        }
        let rest = config::twilio_rest(src)?;
        if outbound_from.is_some() && rest.is_none() {
            return Err(invalid(
                OUTBOUND_FROM,
                "outbound calls need Twilio's REST API: set TWILIO_ACCOUNT_SID (with \
                 TWILIO_AUTH_TOKEN, or TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET)",
            ));
        }
        let call_registry = config::call_registry(src)?;
        let calls_api_key = src
            .get(CALLS_API_KEY)
            .map(|raw| config::secret_spec(CALLS_API_KEY, &raw))
            .transpose()?;
        let outbound_allowlist = Allowlist::parse(&src.get(OUTBOUND_ALLOWLIST).unwrap_or_default())
            .map_err(|e| invalid(OUTBOUND_ALLOWLIST, &e))?;
        if calls_api_key.is_some() {
            if rest.is_none() {
                return Err(invalid(
                    CALLS_API_KEY,
                    "outbound calls need Twilio's REST API: set TWILIO_ACCOUNT_SID (with \
                     TWILIO_AUTH_TOKEN, or TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET)",
                ));
            }
            if outbound_allowlist.is_empty() {
                return Err(invalid(
                    OUTBOUND_ALLOWLIST,
                    "required with CALLS_API_KEY: the numbers (or +prefix*) outbound calls may dial",
                ));
            }
        }
        let public_api_url = src
            .get(PUBLIC_API_URL)
            .map(|u| u.trim().trim_end_matches('/').to_string());
        if public_api_url.as_deref().is_some_and(|u| {
            !u.starts_with("https://") || !is_http_url(u) || u.contains(['?', '#'])
        }) {
            return Err(invalid(
                PUBLIC_API_URL,
                "expected https://host[/path] without query string",
            ));
        }
        let fallback = Fallback {
            say: src.get(FALLBACK_SAY),
            redirect_url: src.get(FALLBACK_REDIRECT_URL),
        };
        if fallback
            .redirect_url
            .as_deref()
            .is_some_and(|u| !is_http_url(u))
        {
            return Err(invalid(FALLBACK_REDIRECT_URL, "expected an http(s):// URL"));
        }
        Ok(Self {
            mint_api_key,
            shared_secret,
            twilio_auth_token,
            twilio_account_sid: config::twilio_account_sid(src)?,
            stream_url_base,
            public_webhook_url,
            token_ttl,
            token_max_ttl,
            twiml_parameters: twiml_parameters(src)?,
            fallback,
            transfer_failed_say: src
                .get(TRANSFER_FAILED_SAY)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| super::transfer::FAILED_SAY_DEFAULT.to_string()),
            secrets_ttl: seconds(src, SECRETS_TTL_SECONDS, SECRETS_TTL_SECONDS_DEFAULT)?,
            log_format: log_format(src)?,
            rest,
            outbound_from,
            public_api_url,
            outbound_context_ttl: seconds(
                src,
                OUTBOUND_CONTEXT_TTL_SECONDS,
                OUTBOUND_CONTEXT_TTL_SECONDS_DEFAULT,
            )?,
            metric_namespace: src
                .get(EMF_NAMESPACE)
                .unwrap_or_else(|| EMF_NAMESPACE_DEFAULT.to_string()),
            calls_api_key,
            outbound_allowlist: Arc::new(outbound_allowlist),
            admission: config::admission(src, call_registry.as_ref())?,
            call_registry,
            call_events: config::call_events(src),
        })
    }
}

fn invalid(var: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.to_string(),
    }
}

fn log_format(src: &dyn Source) -> Result<LogFormat, ConfigError> {
    const LOG_FORMAT: &str = crate::config::env::LOG_FORMAT;
    match src.get(LOG_FORMAT).as_deref() {
        None | Some("json") => Ok(LogFormat::Json),
        Some("pretty") => Ok(LogFormat::Pretty),
        Some(_) => Err(invalid(LOG_FORMAT, "expected 'json' or 'pretty'")),
    }
}

fn seconds(src: &dyn Source, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
    config::number(src, var, default, 1).map(Duration::from_secs)
}

fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !r.contains(' '))
}

/// The allow-list: names of plain form fields; anything token-like is refused so a token can
/// never be copied into the TwiML.
fn twiml_parameters(src: &dyn Source) -> Result<Vec<String>, ConfigError> {
    let raw = src
        .get(env::TWIML_PARAMETERS)
        .unwrap_or_else(|| env::TWIML_PARAMETERS_DEFAULT.to_string());
    let mut names = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(invalid(
                env::TWIML_PARAMETERS,
                "field names may contain only letters, digits and _",
            ));
        }
        if name.to_ascii_lowercase().contains("token") {
            return Err(invalid(
                env::TWIML_PARAMETERS,
                "token fields are never copied into TwiML",
            ));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    Ok(names)
}
