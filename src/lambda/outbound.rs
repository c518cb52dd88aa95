//! Outbound calls. `POST /calls` (bearer `MINT_API_KEY`) validates the request and creates
//! the call with Twilio's REST API: `Url` is this API's `/calls/answer`, answering-machine
//! detection runs asynchronously (`DetectMessageEnd`, verdict POSTed to `/calls/amd`). The
//! per-call context never reaches Twilio in clear: it rides sealed (see [`crate::context`])
//! in those two URLs' `ctx` query. `/calls/answer` (signed by Twilio) answers
//! `<Connect><Stream>` with a token bound to the CallSid carrying the context; `/calls/amd`
//! (signed) hangs up or leaves the voicemail when a machine answered; `/calls/status`
//! (signed) receives the final status. Verdicts and statuses become CloudWatch metrics
//! ([`outcome`]).

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};

use super::token::{bearer_key, issuer};
use super::webhook::{stream_twiml, verified_form, webhook_url};
use super::{body_bytes, json, LambdaError, LambdaState};
use crate::context::{Audience, CallContext, Sealer, Voicemail, MAX_SEALED_CHARS};
use crate::twilio::twiml::say_then_hang_up;
use outcome::Outcome;
use request::{validate, CallRequest};

/// Route of the answer webhook, below the API's base URL.
pub const ANSWER_ROUTE: &str = "/calls/answer";
/// Route of the AMD callback.
pub const AMD_ROUTE: &str = "/calls/amd";
/// Route of the call-status callback (the final status).
pub const STATUS_ROUTE: &str = "/calls/status";
/// Longest URL Twilio accepts in a call's `Url` and callbacks.
const MAX_URL_CHARS: usize = 4000;
/// The refusal of a context too large to travel in the URLs and the stream token.
const TOO_LARGE: &str =
    "prompt, firstMessage and dynamicVariables together are too large for one call (about 1.7 KB)";

/// `POST /calls`: validates, creates the call, answers 201 `{"callSid","status"}`.
pub(super) async fn create(
    state: &LambdaState,
    req: &Request,
) -> Result<Response<Body>, LambdaError> {
    bearer_key(state, req)?;
    let request: CallRequest = serde_json::from_slice(body_bytes(req)).map_err(|e| {
        LambdaError::InvalidRequest(if e.is_data() {
            "body fields missing, unknown or of the wrong type (to is required)"
        } else {
            "body is not a JSON object"
        })
    })?;
    let outbound = validate(request, state.config.outbound_from.as_deref())?;
    let rest = state
        .rest
        .as_ref()
        .ok_or(LambdaError::OutboundNotConfigured)?;

    let base = match &state.config.public_api_url {
        Some(base) => base.clone(),
        None => api_base(req).ok_or(LambdaError::NoHost)?,
    };
    let sealer = sealer(state)?;
    let exp = state
        .clock
        .now()
        .saturating_add(state.config.outbound_context_ttl.as_secs());
    let answer_ctx = sealer.seal(Audience::Answer, "", exp, &outbound.context)?;
    let amd_ctx = sealer.seal(Audience::Amd, "", exp, &outbound.voicemail)?;
    let answer_url = format!("{base}{ANSWER_ROUTE}?ctx={answer_ctx}");
    let amd_url = format!("{base}{AMD_ROUTE}?ctx={amd_ctx}");
    let status_url = format!("{base}{STATUS_ROUTE}");
    // The stream token carries the context again: it must open in media-ws too.
    let fits =
        |url: &str, sealed: &str| url.len() <= MAX_URL_CHARS && sealed.len() <= MAX_SEALED_CHARS;
    if !fits(&answer_url, &answer_ctx) || !fits(&amd_url, &amd_ctx) {
        return Err(LambdaError::InvalidRequest(TOO_LARGE));
    }
    let form = [
        ("To", outbound.to.as_str()),
        ("From", outbound.from.as_str()),
        ("Url", answer_url.as_str()),
        ("Method", "POST"),
        ("MachineDetection", "DetectMessageEnd"),
        ("AsyncAmd", "true"),
        ("AsyncAmdStatusCallback", amd_url.as_str()),
        ("AsyncAmdStatusCallbackMethod", "POST"),
        // The default event, `completed`, carries the final status (busy, no-answer, …).
        ("StatusCallback", status_url.as_str()),
        ("StatusCallbackMethod", "POST"),
    ];
    let call = rest.create_call(&form).await.map_err(LambdaError::Twilio)?;
    // Ids and names only: never the numbers or the context's values.
    tracing::info!(
        call_sid = %call.sid,
        status = %call.status,
        dynamic_variables = outbound.context.dynamic_variables.len(),
        overrides = ?outbound.context.overrides.names(),
        voicemail = outbound.voicemail.label(),
        "outbound call created"
    );
    json(
        StatusCode::CREATED,
        &serde_json::json!({"callSid": call.sid, "status": call.status}),
    )
}

/// `POST /calls/answer`: Twilio's request when the callee answers.
pub(super) fn answer(state: &LambdaState, req: &Request) -> Result<Response<Body>, LambdaError> {
    let url = signed_url(state, req, ANSWER_ROUTE)?;
    let form = verified_form(state, req, &url)?;
    let context: CallContext = open(state, req, Audience::Answer)?;
    let call_sid = form.call_sid();
    let minted = issuer(state)?.mint_with_context(call_sid, state.config.token_ttl, &context)?;
    let xml = stream_twiml(state, &form, minted.token.expose())?;
    tracing::info!(
        call_sid,
        dynamic_variables = context.dynamic_variables.len(),
        overrides = ?context.overrides.names(),
        "outbound call answered, stream twiml issued"
    );
    Ok(xml)
}

/// `POST /calls/amd`: the asynchronous AMD verdict. A machine (after its greeting) or a fax
/// gets the voicemail choice; a human or an unknown verdict leaves the call with the agent.
pub(super) async fn amd(state: &LambdaState, req: &Request) -> Result<Response<Body>, LambdaError> {
    let url = signed_url(state, req, AMD_ROUTE)?;
    let form = verified_form(state, req, &url)?;
    let voicemail: Voicemail = open(state, req, Audience::Amd)?;
    let call_sid = form.call_sid();
    let answered_by = form
        .field("AnsweredBy")
        .ok_or(LambdaError::InvalidRequest("AnsweredBy missing"))?;
    let verdict = Verdict::of(answered_by);
    let action = match verdict {
        Verdict::Machine => voicemail.label(),
        Verdict::Person => "none",
    };
    let answered_by = outcome::answered_by_label(answered_by);
    let detection_ms = number(form.field("MachineDetectionDuration"));
    tracing::info!(
        call_sid,
        answered_by,
        action,
        detection_ms,
        "answering machine detection"
    );
    outcome::publish(
        &state.config.metric_namespace,
        Outcome::Amd {
            answered_by,
            detection_ms,
        },
    );
    if verdict == Verdict::Machine {
        let rest = state
            .rest
            .as_ref()
            .ok_or(LambdaError::OutboundNotConfigured)?;
        let result = match &voicemail {
            Voicemail::Hangup => rest.hang_up(call_sid).await,
            Voicemail::Message(message) => {
                rest.redirect_twiml(call_sid, &say_then_hang_up(message))
                    .await
            }
        };
        match result {
            Ok(()) => {}
            // The callee (or the machine) already hung up: nothing left to do.
            Err(e) if e.call_gone() => {
                tracing::info!(call_sid, "call already ended before the voicemail action");
            }
            Err(e) => return Err(LambdaError::Twilio(e)),
        }
    }
    json(
        StatusCode::OK,
        &serde_json::json!({"ok": true, "action": action}),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// `machine_end_beep`, `machine_end_silence`, `machine_end_other`, `fax`.
    Machine,
    /// `human`, `unknown`, and anything else (`machine_start` is `Enable`'s early guess,
    /// which fires on people with brief pauses): the agent keeps the call.
    Person,
}

impl Verdict {
    fn of(answered_by: &str) -> Self {
        match answered_by {
            "machine_end_beep" | "machine_end_silence" | "machine_end_other" | "fax" => {
                Self::Machine
            }
            _ => Self::Person,
        }
    }
}

/// `POST /calls/status`: Twilio's status callback (the `completed` event: the call's final
/// status, whatever it was). Counted, logged with ids only, answered 200.
pub(super) fn status(state: &LambdaState, req: &Request) -> Result<Response<Body>, LambdaError> {
    let url = signed_url(state, req, STATUS_ROUTE)?;
    let form = verified_form(state, req, &url)?;
    let status = outcome::status_label(form.field("CallStatus").unwrap_or_default());
    let duration_s = number(form.field("CallDuration"));
    tracing::info!(
        call_sid = form.call_sid(),
        status,
        duration_s,
        "outbound call status"
    );
    outcome::publish(
        &state.config.metric_namespace,
        Outcome::Status { status, duration_s },
    );
    json(StatusCode::OK, &serde_json::json!({"ok": true}))
}

/// A count Twilio sends as text (`"4120"`).
pub(super) fn number(field: Option<&str>) -> Option<u64> {
    field.and_then(|d| d.parse().ok())
}

/// The API's base URL from the `/calls` request: its public URL without the query and the
/// trailing `/calls`.
fn api_base(req: &Request) -> Option<String> {
    let url = webhook_url(req)?;
    let url = url
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    url.strip_suffix("/calls").map(str::to_string)
}

/// The URL Twilio signed for a callback on `route`: `PUBLIC_API_URL` + route + the query as
/// sent, or the request's own URL.
pub(super) fn signed_url(
    state: &LambdaState,
    req: &Request,
    route: &str,
) -> Result<String, LambdaError> {
    match &state.config.public_api_url {
        Some(base) => {
            let mut url = format!("{base}{route}");
            if let Some(query) = req.uri().query().filter(|q| !q.is_empty()) {
                url.push('?');
                url.push_str(query);
            }
            Ok(url)
        }
        None => webhook_url(req).ok_or(LambdaError::NoHost),
    }
}

/// The `ctx` query parameter opened for `audience`.
fn open<T: serde::de::DeserializeOwned>(
    state: &LambdaState,
    req: &Request,
    audience: Audience,
) -> Result<T, LambdaError> {
    let sealed = req
        .uri()
        .query()
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "ctx")
                .map(|(_, v)| v.into_owned())
        })
        .ok_or(LambdaError::InvalidContext("missing"))?;
    sealer(state)?
        .open(audience, "", state.clock.now(), &sealed)
        .map_err(|e| {
            LambdaError::InvalidContext(match e {
                crate::context::SealError::Expired => "expired",
                _ => "invalid",
            })
        })
}

/// The sealer for the current `MEDIA_SHARED_SECRET` list.
fn sealer(state: &LambdaState) -> Result<Sealer, LambdaError> {
    let list = LambdaState::secret(&state.shared_secret, "MEDIA_SHARED_SECRET")?;
    let secrets = crate::auth::secret_list(&list);
    if secrets.is_empty() {
        return Err(LambdaError::SecretUnavailable("MEDIA_SHARED_SECRET"));
    }
    Ok(Sealer::new(&secrets))
}

pub(super) mod outcome;
mod request;

#[cfg(test)]
mod tests;
