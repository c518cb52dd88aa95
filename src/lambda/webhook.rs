//! `POST /twiml`: Twilio's voice webhook. Validates `X-Twilio-Signature` (HMAC-SHA1 with the
//! Auth Token) over the public URL, then answers `<Connect><Stream>` with a token bound to the
//! call's CallSid, allow-listed `<Parameter>`s and the fallback verbs.

use lambda_http::http::header::{HeaderValue, CONTENT_TYPE, HOST};
use lambda_http::http::StatusCode;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};

use super::admission::{admit, overflow_twiml, Door, STREAM_START_LEASE};
use super::token::{issuer, stream_url};
use super::{body_bytes, valid_call_sid, LambdaError, LambdaState};
use crate::twilio::signature::{parse_form, valid_for_any_token, SIGNATURE_HEADER};
use crate::twilio::twiml::{self, ConnectStream, MAX_PARAMETER_CHARS};

const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// A Twilio request whose signature, account and CallSid were checked.
pub(super) struct TwilioForm {
    /// The form fields, in order.
    pub params: Vec<(String, String)>,
}

impl TwilioForm {
    /// The value of field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The CallSid (checked to be well formed).
    pub fn call_sid(&self) -> &str {
        self.field("CallSid").unwrap_or_default()
    }
}

/// Validates the webhook, admits the call against the agent plan, and renders the TwiML
/// (the overflow TwiML when the plan is full).
pub(super) async fn twiml(
    state: &LambdaState,
    req: &Request,
) -> Result<Response<Body>, LambdaError> {
    let url = match &state.config.public_webhook_url {
        Some(url) => url.clone(),
        None => webhook_url(req).ok_or(LambdaError::NoHost)?,
    };
    let form = verified_form(state, req, &url)?;
    if admit(state, form.call_sid(), STREAM_START_LEASE).await == Door::Full {
        tracing::info!(call_sid = form.call_sid(), "overflow twiml issued");
        return Ok(overflow_twiml(state));
    }
    let minted = issuer(state)?.mint(Some(form.call_sid()), state.config.token_ttl)?;
    let xml = stream_twiml(state, &form, minted.token.expose())?;
    tracing::info!(call_sid = form.call_sid(), "stream twiml issued");
    Ok(xml)
}

/// A Twilio webhook, checked: form content type, `X-Twilio-Signature` over `url` (HMAC-SHA1
/// with the Auth Token), the `AccountSid` when one is configured, a well-formed `CallSid`.
///
/// # Errors
/// 415, 403 (signature, account) or 400 (CallSid).
pub(super) fn verified_form(
    state: &LambdaState,
    req: &Request,
    url: &str,
) -> Result<TwilioForm, LambdaError> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case(FORM_CONTENT_TYPE) {
        return Err(LambdaError::UnsupportedMediaType);
    }
    let params = parse_form(body_bytes(req));
    let presented = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let key = LambdaState::secret(&state.twilio_auth_token, "TWILIO_AUTH_TOKEN")?;
    // HMAC-SHA1 with the Auth Token(s) only; the SharedKey (HMAC-SHA256) scheme is not
    // supported.
    if !valid_for_any_token(key.expose(), url, &params, presented) {
        return Err(LambdaError::BadSignature);
    }
    let form = TwilioForm { params };
    if let Some(expected) = &state.config.twilio_account_sid {
        if form.field("AccountSid") != Some(expected.as_str()) {
            return Err(LambdaError::AccountMismatch);
        }
    }
    let call_sid = form
        .field("CallSid")
        .filter(|s| !s.is_empty())
        .ok_or(LambdaError::MissingCallSid)?;
    if !valid_call_sid(call_sid) {
        return Err(LambdaError::InvalidCallSid);
    }
    Ok(form)
}

/// `<Connect><Stream>` to `STREAM_URL_BASE/jwt/<token>` with the allow-listed fields as
/// `<Parameter>`s and the fallback verbs.
pub(super) fn stream_twiml(
    state: &LambdaState,
    form: &TwilioForm,
    token: &str,
) -> Result<Response<Body>, LambdaError> {
    let mut parameters = Vec::new();
    for name in &state.config.twiml_parameters {
        let Some(value) = form.field(name) else {
            continue;
        };
        if name.encode_utf16().count() + value.encode_utf16().count() >= MAX_PARAMETER_CHARS {
            tracing::warn!(parameter = %name, "webhook field too long for a stream parameter, skipped");
            continue;
        }
        parameters.push((name.clone(), value.to_string()));
    }
    let stream = ConnectStream {
        url: stream_url(&state.config.stream_url_base, token),
        parameters,
        ..ConnectStream::default()
    };
    let xml = twiml::connect_stream_response(&stream, None, &state.config.fallback)?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, HeaderValue::from_static("text/xml"))
        .body(Body::Text(xml))?)
}

/// The URL Twilio called, rebuilt from the request: `https://` + `Host` header (else the
/// request context's domain name) + the path as the client sent it + `?` + the query string
/// when not empty.
///
/// The path as sent keeps a named stage (`/prod/twiml`) and a custom domain's base path
/// (`/voice/twiml`): it is `rawPath` on an HTTP API (payload 2.0) and `requestContext.path`
/// on a REST API (payload 1.0, whose top-level `path` drops the stage). HTTP APIs deliver the
/// raw query exactly as sent, so `%XX` escapes survive; other event sources get their query
/// re-encoded by lambda_http (set `PUBLIC_WEBHOOK_URL` there).
pub fn webhook_url(req: &Request) -> Option<String> {
    let domain = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.domain_name.as_deref(),
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.domain_name.as_deref(),
        _ => None,
    };
    let host = req
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty())
        .or(domain)
        .filter(|h| !h.is_empty())?;
    let raw = req.raw_http_path();
    let rest_path = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.path.as_deref().filter(|p| !p.is_empty()),
        _ => None,
    };
    let path = match rest_path {
        Some(path) => path,
        None if raw.is_empty() => req.uri().path(),
        None => raw,
    };
    let mut url = format!("https://{host}{path}");
    if let Some(query) = req.uri().query().filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(query);
    }
    Some(url)
}
