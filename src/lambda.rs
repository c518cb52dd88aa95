//! The `media-lambda` function: `/health`, `/token` (stream tokens for backends), Twilio's voice
//! webhook `/twiml`, outbound calls under `/calls`, and `/transfer/result`. Owns routing, request
//! checks and responses; tokens, signatures, TwiML and secrets come from their own modules.

mod admission;
pub mod config;
mod error;
mod outbound;
mod outcome;
mod token;
mod transfer;
mod webhook;

use std::sync::Arc;
use std::time::SystemTime;

use lambda_http::http::header::{HeaderValue, CONTENT_TYPE};
use lambda_http::http::{Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};

pub use config::LambdaConfig;
pub use error::LambdaError;
pub use webhook::webhook_url;

use crate::auth::Clock;
use crate::metrics::Metrics;
use crate::registry::CallRegistry;
use crate::secret::Secret;
use crate::secrets::{SecretHandle, Secrets, SecretsError};
use crate::twilio::rest::TwilioRest;

/// Service name reported by `/health`.
pub const SERVICE: &str = "media-lambda";

/// Everything an invocation needs; built once per cold start.
#[derive(Debug)]
pub struct LambdaState {
    /// The validated configuration.
    pub config: LambdaConfig,
    secrets: Secrets,
    mint_api_key: SecretHandle,
    shared_secret: SecretHandle,
    twilio_auth_token: SecretHandle,
    rest: Option<TwilioRest>,
    calls_api_key: Option<SecretHandle>,
    registry: Option<CallRegistry>,
    /// `Call Completed` events, sent before the response.
    events: Option<crate::bus::DirectBus>,
    /// Counters of the registry client (the function's own metrics are EMF lines).
    registry_metrics: Metrics,
    clock: Clock,
}

/// Why the function could not start.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A secret could not be resolved.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The TLS roots for Twilio's REST API could not be loaded.
    #[error("tls roots for the twilio rest api unavailable: {0}")]
    Tls(#[source] std::io::Error),
}

impl LambdaState {
    /// The state for `config`, with references registered but not loaded; see
    /// [`LambdaState::load`].
    ///
    /// # Errors
    /// [`StateError::Tls`] when Twilio's REST API is configured and the system has no TLS roots.
    pub fn new(config: LambdaConfig, clock: Clock) -> Result<Self, StateError> {
        let secrets = Secrets::new(config.secrets_ttl);
        let rest = config
            .rest
            .as_ref()
            .map(|rest| TwilioRest::new(rest, &secrets))
            .transpose()
            .map_err(StateError::Tls)?;
        Ok(Self {
            mint_api_key: secrets.handle(&config.mint_api_key),
            shared_secret: secrets.handle(&config.shared_secret),
            twilio_auth_token: secrets.handle(&config.twilio_auth_token),
            calls_api_key: config.calls_api_key.as_ref().map(|k| secrets.handle(k)),
            registry: config.call_registry.clone().map(CallRegistry::new),
            events: config.call_events.clone().map(crate::bus::DirectBus::new),
            registry_metrics: Metrics::new(),
            rest,
            secrets,
            config,
            clock,
        })
    }

    /// The state for `config` with every `ssm:` reference resolved.
    ///
    /// # Errors
    /// [`StateError`] naming the parameters that are missing or could not be read.
    pub async fn load(config: LambdaConfig) -> Result<Self, StateError> {
        let state = Self::new(config, Clock::System)?;
        state.secrets.load().await?;
        if let Some(registry) = &state.registry {
            registry.warm().await;
        }
        Ok(state)
    }

    /// The secrets store (rotation is applied by [`handle`] before each request).
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    fn secret(
        handle: &SecretHandle,
        name: &'static str,
    ) -> Result<Arc<Secret<String>>, LambdaError> {
        handle.current().ok_or(LambdaError::SecretUnavailable(name))
    }
}

/// Answers one request; errors are returned typed (see [`respond`] for the HTTP mapping).
///
/// # Errors
/// The [`LambdaError`] describing why the request was refused or failed.
pub async fn handle(state: &LambdaState, req: Request) -> Result<Response<Body>, LambdaError> {
    let path = route_path(&req);
    let method = req.method();
    match path {
        "/health" => match *method {
            Method::GET | Method::HEAD => health(),
            _ => Err(LambdaError::MethodNotAllowed("GET, HEAD")),
        },
        "/token"
        | "/twiml"
        | "/calls"
        | outbound::ANSWER_ROUTE
        | outbound::AMD_ROUTE
        | outbound::STATUS_ROUTE
        | transfer::RESULT_ROUTE
            if method != Method::POST =>
        {
            Err(LambdaError::MethodNotAllowed("POST"))
        }
        "/token" => {
            // Rotation: secrets whose TTL ran out are fetched again before they are used.
            state.secrets.refresh_stale().await;
            token::mint(state, &req)
        }
        "/twiml" => {
            state.secrets.refresh_stale().await;
            webhook::twiml(state, &req).await
        }
        "/calls" => {
            state.secrets.refresh_stale().await;
            outbound::create(state, &req).await
        }
        outbound::ANSWER_ROUTE => {
            state.secrets.refresh_stale().await;
            outbound::answer(state, &req).await
        }
        outbound::AMD_ROUTE => {
            state.secrets.refresh_stale().await;
            outbound::amd(state, &req).await
        }
        outbound::STATUS_ROUTE => {
            state.secrets.refresh_stale().await;
            outbound::status(state, &req).await
        }
        transfer::RESULT_ROUTE => {
            state.secrets.refresh_stale().await;
            transfer::result(state, &req)
        }
        _ => Err(LambdaError::NotFound),
    }
}

/// [`handle`], with errors turned into their JSON responses: client errors are logged at
/// `info` with their code, internal ones at `error` with their detail (never a secret).
pub async fn respond(state: &LambdaState, req: Request) -> Response<Body> {
    let route = route_path(&req);
    match handle(state, req).await {
        Ok(resp) => resp,
        Err(e) => {
            if e.is_internal() {
                let cause = std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_default();
                tracing::error!(code = e.code(), error = %e, cause = %cause, route, "request failed");
                if TWIML_ROUTES.contains(&route) {
                    // Twilio runs the answer of these: a JSON 5xx would make it say "an
                    // application error has occurred". The caller hears a short apology.
                    outcome::publish(
                        &state.config.metric_namespace,
                        outcome::Outcome::WebhookError { route },
                    );
                    return fallback_twiml(state);
                }
            } else {
                tracing::info!(
                    code = e.code(),
                    status = e.status().as_u16(),
                    reason = e.reason(),
                    "request refused"
                );
            }
            e.to_response()
        }
    }
}

/// The routes whose answer Twilio runs as TwiML.
const TWIML_ROUTES: [&str; 3] = ["/twiml", outbound::ANSWER_ROUTE, transfer::RESULT_ROUTE];

/// What a caller hears when a TwiML webhook fails inside: `FALLBACK_SAY` (or a default
/// apology), then the hang-up; 200, so Twilio plays it.
fn fallback_twiml(state: &LambdaState) -> Response<Body> {
    let say = state
        .config
        .fallback
        .say
        .as_deref()
        .unwrap_or(FALLBACK_SAY_DEFAULT);
    let mut resp = Response::new(Body::Text(crate::twilio::twiml::say_then_hang_up(say)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    resp
}

/// Said when a TwiML webhook fails and `FALLBACK_SAY` is unset.
const FALLBACK_SAY_DEFAULT: &str =
    "Sorry, we cannot take your call right now. Please try again later. Goodbye.";

/// The routes this function answers.
const ROUTES: [&str; 8] = [
    "/health",
    "/token",
    "/twiml",
    "/calls",
    outbound::ANSWER_ROUTE,
    outbound::AMD_ROUTE,
    outbound::STATUS_ROUTE,
    transfer::RESULT_ROUTE,
];

/// The route a request is for, whatever API Gateway front door it came through: the path's
/// last segment names it, and whatever API Gateway puts before it is ignored — a named stage
/// (`/prod/twiml` on an HTTP API), a custom domain's base path mapping (`/voice/twiml`, on
/// HTTP and REST APIs alike), or both. API Gateway only forwards the paths it was configured
/// with, so nothing else reaches the function through a prefix.
fn route_path(req: &Request) -> &'static str {
    let raw = req.raw_http_path();
    let path = if raw.is_empty() {
        req.uri().path()
    } else {
        raw
    };
    route_of(path)
}

/// [`route_path`] on a path: the known route it ends with, or `""`.
fn route_of(path: &str) -> &'static str {
    let path = match path.trim_end_matches('/') {
        "" => "/",
        p => p,
    };
    ROUTES
        .into_iter()
        .find(|route| path.ends_with(route))
        .unwrap_or("")
}

fn health() -> Result<Response<Body>, LambdaError> {
    let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    json(
        StatusCode::OK,
        &serde_json::json!({"ok": true, "service": SERVICE, "time": time}),
    )
}

/// A JSON response.
fn json(status: StatusCode, value: &serde_json::Value) -> Result<Response<Body>, LambdaError> {
    Ok(Response::builder()
        .status(status)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(Body::Text(value.to_string()))?)
}

/// The request body's bytes, whatever form lambda_http decoded it into.
fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Empty => &[],
        Body::Text(s) => s.as_bytes(),
        Body::Binary(b) => b,
        // `Body` is non-exhaustive upstream; anything new is treated as empty.
        _ => &[],
    }
}

/// Whether `sid` looks like a Twilio CallSid: `CA` and 32 ASCII letters or digits.
fn valid_call_sid(sid: &str) -> bool {
    sid.len() == 34 && sid.starts_with("CA") && sid.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests;
