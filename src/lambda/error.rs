//! [`LambdaError`]: every way a request can fail, each with one status and one constant error
//! code. Client errors say what was wrong; internal ones are generic in the response and keep
//! their detail (never a secret) for the log.

use lambda_http::http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};

use crate::auth::MintError;
use crate::context::SealError;
use crate::twilio::rest::RestError;
use crate::twilio::twiml::TwimlError;

/// The status a Twilio failure becomes: its refusal of the call (bad or unreachable number,
/// geo permissions, …) is the caller's 4xx; a refusal of our credentials or account, an
/// outage or a timeout is a 502/503/504 of ours.
fn twilio_status(e: &RestError) -> StatusCode {
    match e {
        RestError::Twilio { status: 429, .. } => StatusCode::TOO_MANY_REQUESTS,
        RestError::Twilio {
            status: 401 | 403 | 404,
            ..
        } => StatusCode::BAD_GATEWAY,
        RestError::Twilio { status, .. } if (400..500).contains(status) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        RestError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        RestError::Credentials | RestError::NotConfigured => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// Why a request was not answered normally.
#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    /// No such route.
    #[error("not found")]
    NotFound,
    /// The route exists but not for this method; the value is the `Allow` header.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// The body is not the JSON the route expects.
    #[error("body is not valid json")]
    BadJson,
    /// The body is not `application/x-www-form-urlencoded`.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// `ttlSeconds` is zero.
    #[error("ttlSeconds must be positive")]
    InvalidTtl,
    /// A CallSid is missing where required.
    #[error("callSid missing")]
    MissingCallSid,
    /// A CallSid is not `CA` followed by 32 letters or digits.
    #[error("callSid malformed")]
    InvalidCallSid,
    /// No or wrong bearer key.
    #[error("unauthorized")]
    Unauthorized,
    /// `X-Twilio-Signature` missing or wrong.
    #[error("twilio signature invalid")]
    BadSignature,
    /// The webhook's `AccountSid` is not the configured one.
    #[error("account sid mismatch")]
    AccountMismatch,
    /// No host to rebuild the webhook URL from (and no `PUBLIC_WEBHOOK_URL`).
    #[error("request has no host")]
    NoHost,
    /// A secret has no value (an SSM reference never loaded).
    #[error("secret {0} unavailable")]
    SecretUnavailable(&'static str),
    /// Signing a token failed.
    #[error("token minting failed")]
    Mint(#[from] MintError),
    /// Building the TwiML document failed.
    #[error("twiml rendering failed")]
    Twiml(#[from] TwimlError),
    /// Building the HTTP response failed.
    #[error("response building failed")]
    Http(#[from] lambda_http::http::Error),
    /// A `POST /calls` body that cannot place a call; the reason is constant text.
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// An outbound callback whose sealed `ctx` is missing, altered, foreign or expired.
    #[error("call context {0}")]
    InvalidContext(&'static str),
    /// Outbound calls need Twilio's REST API (`TWILIO_ACCOUNT_SID` and a credential).
    #[error("outbound calls are not configured")]
    OutboundNotConfigured,
    /// Sealing a call context failed.
    #[error("context sealing failed")]
    Seal(#[from] SealError),
    /// Twilio refused or could not be reached.
    #[error("twilio: {0}")]
    Twilio(#[source] RestError),
    /// `POST /calls` to a number outside `OUTBOUND_ALLOWLIST`: nothing was sent to Twilio.
    #[error("destination not allowed")]
    DestinationNotAllowed,
    /// An `Idempotency-Key` reused with a different body.
    #[error("idempotency key reused with another request")]
    IdempotencyKeyReused,
    /// The first request with this `Idempotency-Key` is still under way.
    #[error("idempotency key in use")]
    IdempotencyKeyInUse,
    /// `POST /calls` while every agent slot is live (`AGENT_CONCURRENCY_LIMIT`).
    #[error("agent plan at capacity")]
    AtCapacity,
    /// The call registry (DynamoDB) could not be read or written; the text is the SDK's
    /// error code, never item data.
    #[error("call registry unavailable: {0}")]
    RegistryUnavailable(String),
}

impl LambdaError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadJson | Self::InvalidTtl | Self::MissingCallSid | Self::InvalidCallSid => {
                StatusCode::BAD_REQUEST
            }
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BadSignature | Self::AccountMismatch => StatusCode::FORBIDDEN,
            Self::NoHost => StatusCode::BAD_REQUEST,
            Self::SecretUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Mint(_) | Self::Twiml(_) | Self::Http(_) | Self::Seal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::InvalidContext(_) => StatusCode::FORBIDDEN,
            Self::OutboundNotConfigured => StatusCode::NOT_IMPLEMENTED,
            Self::Twilio(e) => twilio_status(e),
            Self::DestinationNotAllowed => StatusCode::FORBIDDEN,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::IdempotencyKeyInUse => StatusCode::CONFLICT,
            Self::AtCapacity => StatusCode::TOO_MANY_REQUESTS,
            Self::RegistryUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The constant error code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::BadJson => "bad_json",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::InvalidTtl => "invalid_ttl",
            Self::MissingCallSid => "missing_call_sid",
            Self::InvalidCallSid => "invalid_call_sid",
            Self::Unauthorized => "unauthorized",
            Self::BadSignature => "invalid_signature",
            Self::AccountMismatch => "account_mismatch",
            Self::NoHost => "missing_host",
            Self::SecretUnavailable(_) => "unavailable",
            Self::Mint(_) | Self::Twiml(_) | Self::Http(_) | Self::Seal(_) => "internal_error",
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidContext(_) => "invalid_context",
            Self::OutboundNotConfigured => "outbound_not_configured",
            Self::Twilio(_) => "twilio_error",
            Self::DestinationNotAllowed => "destination_not_allowed",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::IdempotencyKeyInUse => "idempotency_key_in_use",
            Self::AtCapacity => "at_capacity",
            Self::RegistryUnavailable(_) => "unavailable",
        }
    }

    /// Constant detail for the log: the invalid field, the context's fault, Twilio's code.
    pub fn reason(&self) -> Option<String> {
        match self {
            Self::InvalidRequest(reason) | Self::InvalidContext(reason) => {
                Some((*reason).to_string())
            }
            Self::RegistryUnavailable(cause) => Some(cause.clone()),
            Self::Twilio(e) => Some(match e.code() {
                Some(code) => format!("twilio code {code}"),
                None => e.label().to_string(),
            }),
            _ => None,
        }
    }

    /// Whether a call may have been placed although the request failed: Twilio's answer
    /// never came (or could not be read).
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            Self::Twilio(RestError::Timeout | RestError::Transport(_))
        )
    }

    /// Whether this is our fault (logged as an error) rather than the caller's.
    pub fn is_internal(&self) -> bool {
        self.status().is_server_error()
    }

    /// The response: `{"ok":false,"error":"<code>"}` with the status, plus `Allow` or
    /// `WWW-Authenticate` where HTTP asks for them. The only detail: an `invalid_request`'s
    /// constant `reason`, and Twilio's status, code and message for `twilio_error` (the API
    /// caller sent what it may quote). Never a secret.
    pub fn to_response(&self) -> Response<Body> {
        let mut body = serde_json::json!({"ok": false, "error": self.code()});
        match self {
            Self::InvalidRequest(reason) => body["reason"] = (*reason).into(),
            // For the API caller, who sent the numbers Twilio's message may quote; never
            // logged.
            Self::Twilio(RestError::Twilio {
                status,
                code,
                message,
            }) => {
                body["twilioStatus"] = (*status).into();
                body["twilioCode"] = (*code).into();
                body["twilioMessage"] = message.as_str().into();
            }
            Self::Twilio(e) => body["reason"] = e.label().into(),
            _ => {}
        }
        let body = body.to_string();
        let mut resp = Response::new(Body::Text(body));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self {
            Self::MethodNotAllowed(allow) => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            Self::Unauthorized => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::IdempotencyKeyInUse => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::AtCapacity => {
                headers.insert(
                    RETRY_AFTER,
                    HeaderValue::from(super::admission::RETRY_AFTER_SECONDS),
                );
            }
            _ => {}
        }
        resp
    }
}
