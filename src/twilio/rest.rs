//! Twilio's REST API for calls (`/2010-04-01/Accounts/{AC…}/Calls…`): hang up a live call
//! (`Status=completed`), replace what it runs with inline TwiML (a transfer's `<Dial>`), and
//! create calls. Form-encoded, HTTP Basic (Account SID + Auth Token, or an API key), a bounded
//! timeout per attempt, and retries only where Twilio says they are safe. Errors carry Twilio's
//! code; credentials and Twilio's message text (it may quote a phone number) are never logged.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde::Deserialize;

use crate::secrets::{SecretHandle, SecretSpec, Secrets};

/// Twilio's US1 REST host.
pub const DEFAULT_API_BASE: &str = "https://api.twilio.com";
/// Largest response body read.
const BODY_LIMIT: usize = 256 * 1024;
/// Retry delays: 100 ms, doubled per attempt, at most 2 s.
const RETRY: crate::retry::Backoff =
    crate::retry::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));

/// How requests are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestCredentials {
    /// Account SID as user, Auth Token as password (`TWILIO_AUTH_TOKEN`).
    AuthToken(SecretSpec),
    /// An API key (`TWILIO_API_KEY_SID`, `TWILIO_API_KEY_SECRET`): Twilio's recommendation.
    ApiKey {
        /// `SK…`.
        sid: String,
        /// The key's secret.
        secret: SecretSpec,
    },
}

/// Where and how to reach Twilio's REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestConfig {
    /// `https://api.twilio.com`, a regional host (`https://api.dublin.ie1.twilio.com`) or a
    /// loopback fake; no trailing `/`.
    pub api_base: String,
    /// The account that owns the calls (`AC…`): the path names it even with an API key.
    pub account_sid: String,
    /// Basic-auth credentials.
    pub credentials: RestCredentials,
    /// Time allowed for one attempt.
    pub timeout: Duration,
    /// Further attempts where retrying is safe.
    pub retries: u32,
}

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// Twilio answered with an error. `message` is Twilio's text (for API callers; it may
    /// quote a number, so `Display` leaves it out).
    #[error("twilio refused the request: http {status}, code {}", code.map_or_else(|| "none".to_string(), |c| c.to_string()))]
    Twilio {
        /// HTTP status.
        status: u16,
        /// Twilio's error code (`20404`, `21220`, …), when the body had one.
        code: Option<u32>,
        /// Twilio's message.
        message: String,
    },
    /// The request could not be sent or its answer read.
    #[error("twilio request failed: {0}")]
    Transport(&'static str),
    /// An attempt took longer than the timeout.
    #[error("twilio request timed out")]
    Timeout,
    /// The credential's SSM parameter has no value.
    #[error("twilio credentials unavailable")]
    Credentials,
    /// Not a CallSid (`CA` and 32 hex digits): never put into a URL.
    #[error("invalid call sid")]
    InvalidCallSid,
    /// No REST credentials are configured.
    #[error("twilio rest api not configured")]
    NotConfigured,
}

impl RestError {
    /// Twilio's error code, if any.
    pub fn code(&self) -> Option<u32> {
        match self {
            Self::Twilio { code, .. } => *code,
            _ => None,
        }
    }

    /// The call is no longer live (20404 not found, 21220 not in progress): for a hang-up
    /// that is success.
    pub fn call_gone(&self) -> bool {
        matches!(self.code(), Some(20404 | 21220))
    }

    /// The `result` label of `media_twilio_rest_requests_total`.
    pub fn label(&self) -> &'static str {
        match self {
            _ if self.call_gone() => "call_gone",
            Self::Twilio { status, .. } if *status >= 500 => "server_error",
            Self::Twilio { .. } => "refused",
            Self::Transport(_) => "transport",
            Self::Timeout => "timeout",
            Self::Credentials => "credentials",
            Self::InvalidCallSid => "invalid_call_sid",
            Self::NotConfigured => "not_configured",
        }
    }
}

/// A Call resource, as much of it as the bridge reads.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct CallResource {
    /// `CA…`.
    pub sid: String,
    /// `queued`, `ringing`, `in-progress`, `completed`, …
    pub status: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<u32>,
    message: Option<String>,
    // RFC 9457 shape used by newer APIs.
    detail: Option<String>,
    title: Option<String>,
}

/// Which requests may be repeated after an unclear failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Idempotent (a hang-up): timeouts, 5xx and 429 are retried.
    Always,
    /// Not idempotent (a create, a redirect): only what Twilio never processed — 429 and
    /// connection failures before the request was sent.
    NeverProcessed,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client for one account's calls.
#[derive(Debug, Clone)]
pub struct TwilioRest {
    base: String,
    account_sid: String,
    username: String,
    password: SecretHandle,
    timeout: Duration,
    retries: u32,
    http: HttpsClient,
}

/// Whether `sid` is a CallSid: `CA` and 32 hex digits.
pub fn is_call_sid(sid: &str) -> bool {
    sid.len() == 34 && sid.starts_with("CA") && sid.bytes().skip(2).all(|b| b.is_ascii_hexdigit())
}

impl TwilioRest {
    /// A client for `config`; the secret resolves through `secrets` (register before
    /// [`Secrets::load`]).
    ///
    /// # Errors
    /// An I/O error when the system's root certificates cannot be loaded.
    pub fn new(config: &RestConfig, secrets: &Secrets) -> std::io::Result<Self> {
        let (username, password) = match &config.credentials {
            RestCredentials::AuthToken(spec) => (config.account_sid.clone(), secrets.handle(spec)),
            RestCredentials::ApiKey { sid, secret } => (sid.clone(), secrets.handle(secret)),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            base: config.api_base.trim_end_matches('/').to_string(),
            account_sid: config.account_sid.clone(),
            username,
            password,
            timeout: config.timeout,
            retries: config.retries,
            http: Client::builder(hyper_util::rt::TokioExecutor::new()).build(https),
        })
    }

    /// The account whose calls this client controls.
    pub fn account_sid(&self) -> &str {
        &self.account_sid
    }

    /// Hangs up `call_sid` (`Status=completed`). A call that already ended counts as done.
    ///
    /// # Errors
    /// [`RestError`] when Twilio refused or could not be reached after the retries.
    pub async fn hang_up(&self, call_sid: &str) -> Result<(), RestError> {
        match self
            .update(call_sid, &[("Status", "completed")], Retry::Always)
            .await
        {
            Err(e) if e.call_gone() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Replaces what `call_sid` runs with `twiml` (at most 4000 characters).
    ///
    /// # Errors
    /// [`RestError`]; [`RestError::call_gone`] when the caller already hung up.
    pub async fn redirect_twiml(&self, call_sid: &str, twiml: &str) -> Result<(), RestError> {
        self.update(call_sid, &[("Twiml", twiml)], Retry::NeverProcessed)
            .await
            .map(|_| ())
    }

    /// Creates a call with these form fields (`To`, `From`, `Url`, …). Never retried after
    /// Twilio may have seen it: a repeat could ring the callee twice.
    ///
    /// # Errors
    /// [`RestError`].
    pub async fn create_call(&self, form: &[(&str, &str)]) -> Result<CallResource, RestError> {
        let path = format!("/2010-04-01/Accounts/{}/Calls.json", self.account_sid);
        let body = self.post(&path, form, Retry::NeverProcessed).await?;
        serde_json::from_slice(&body).map_err(|_| RestError::Transport("unreadable call resource"))
    }

    async fn update(
        &self,
        call_sid: &str,
        form: &[(&str, &str)],
        retry: Retry,
    ) -> Result<Bytes, RestError> {
        if !is_call_sid(call_sid) {
            return Err(RestError::InvalidCallSid);
        }
        let path = format!(
            "/2010-04-01/Accounts/{}/Calls/{call_sid}.json",
            self.account_sid
        );
        self.post(&path, form, retry).await
    }

    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        retry: Retry,
    ) -> Result<Bytes, RestError> {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut attempt = 0;
        loop {
            let result = tokio::time::timeout(self.timeout, self.post_once(path, &body))
                .await
                .unwrap_or(Err(Failure::Timeout));
            let error = match result {
                Ok(bytes) => return Ok(bytes),
                Err(f) => f,
            };
            let retryable = match (&error, retry) {
                (Failure::Connect, _) | (Failure::Status(429, _), _) => true,
                (Failure::Status(s, _), Retry::Always) => *s >= 500,
                (Failure::Timeout | Failure::Io, Retry::Always) => true,
                _ => false,
            };
            let error = error.into_rest();
            if !retryable || attempt >= self.retries {
                return Err(error);
            }
            tracing::info!(error = %error, attempt, "twilio request failed, retrying");
            tokio::time::sleep(RETRY.delay(attempt)).await;
            attempt += 1;
        }
    }

    async fn post_once(&self, path: &str, body: &str) -> Result<Bytes, Failure> {
        let password = self.password.current().ok_or(Failure::Credentials)?;
        // An Auth Token list (`current,previous`) authenticates with its first entry.
        let password = crate::twilio::signature::current_token(password.expose());
        let basic = STANDARD.encode(format!("{}:{password}", self.username));
        let request = hyper::Request::post(format!("{}{path}", self.base))
            .header("authorization", format!("Basic {basic}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .header(
                "user-agent",
                concat!("media-orchestrator/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| Failure::Io)?;
        let response = self.http.request(request).await.map_err(|e| {
            if e.is_connect() {
                Failure::Connect
            } else {
                Failure::Io
            }
        })?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), BODY_LIMIT)
            .collect()
            .await
            .map_err(|_| Failure::Io)?
            .to_bytes();
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        Err(Failure::Status(status, bytes))
    }
}

enum Failure {
    Connect,
    Io,
    Timeout,
    Credentials,
    Status(u16, Bytes),
}

impl Failure {
    fn into_rest(self) -> RestError {
        match self {
            Self::Connect => RestError::Transport("connect failed"),
            Self::Io => RestError::Transport("request failed"),
            Self::Timeout => RestError::Timeout,
            Self::Credentials => RestError::Credentials,
            Self::Status(status, body) => {
                let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
                let (code, message) = parsed.map_or((None, String::new()), |b| {
                    (
                        b.code,
                        b.message.or(b.detail).or(b.title).unwrap_or_default(),
                    )
                });
                RestError::Twilio {
                    status,
                    code,
                    message,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_sids_are_checked_before_they_reach_a_path() {
        assert!(is_call_sid("CA0123456789abcdef0123456789abcdef"));
        for bad in [
            "CA0123456789abcdef0123456789abcde",
            "CA0123456789abcdef0123456789abcdeg",
            "CA../../Accounts/x/Calls/CA012345678",
            "MZ0123456789abcdef0123456789abcdef",
            "",
        ] {
            assert!(!is_call_sid(bad), "{bad}");
        }
    }

    #[test]
    fn errors_keep_twilio_code_and_hide_its_message() {
        let e = Failure::Status(
            404,
            Bytes::from_static(
                br#"{"code":20404,"message":"The requested resource /2010-04-01/Accounts/AC1/Calls/CA1.json was not found","more_info":"https://www.twilio.com/docs/errors/20404","status":404}"#,
            ),
        )
        .into_rest();
        assert_eq!(e.code(), Some(20404));
        assert!(e.call_gone());
        assert_eq!(e.label(), "call_gone");
        assert_eq!(
            e.to_string(),
            "twilio refused the request: http 404, code 20404"
        );
        let e = Failure::Status(
            400,
            Bytes::from_static(
                br#"{"code":21220,"message":"Call is not in-progress. Cannot redirect."}"#,
            ),
        )
        .into_rest();
        assert!(e.call_gone());
        let e = Failure::Status(400, Bytes::from_static(br#"{"type":"x","title":"Invalid To","status":400,"code":21211,"detail":"The 'To' number +1555 is not valid"}"#)).into_rest();
        assert_eq!(e.code(), Some(21211));
        assert!(!e.to_string().contains("+1555"), "no number in Display");
        assert_eq!(e.label(), "refused");
        let e = Failure::Status(503, Bytes::from_static(b"<html>")).into_rest();
        assert_eq!((e.code(), e.label()), (None, "server_error"));
    }
}
