//! [`LambdaError`]: every way a request can fail, each with one status and one constant error
//! code. Client errors say what was wrong; internal ones are generic in the response and keep
//! their detail (never a secret) for the log.

use lambda_http::http::header::{HeaderValue, ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};

use crate::auth::MintError;
use crate::twilio::twiml::TwimlError;

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
            Self::Mint(_) | Self::Twiml(_) | Self::Http(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            Self::Mint(_) | Self::Twiml(_) | Self::Http(_) => "internal_error",
        }
    }

    /// Whether this is our fault (logged as an error) rather than the caller's.
    pub fn is_internal(&self) -> bool {
        self.status().is_server_error()
    }

    /// The response: `{"ok":false,"error":"<code>"}` with the status, plus `Allow` or
    /// `WWW-Authenticate` where HTTP asks for them. Never carries detail.
    pub fn to_response(&self) -> Response<Body> {
        let body = serde_json::json!({"ok": false, "error": self.code()}).to_string();
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
            _ => {}
        }
        resp
    }
}
