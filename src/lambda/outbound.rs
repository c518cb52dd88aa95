//! Outbound calls: `POST /calls` (bearer `MINT_API_KEY`) places the call through Twilio's REST
//! API with asynchronous AMD; Twilio's signed `/calls/answer`, `/calls/amd` and `/calls/status`
//! connect the stream, act on the verdict and take the final status. The per-call context rides
//! sealed ([`crate::context`]) in the answer and AMD URLs, never in clear.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};

use super::admission;
use super::outcome::{self, Outcome};
use super::token::{bearer_key_of, issuer};
use super::webhook::{stream_twiml, verified_form, webhook_url};
use super::{body_bytes, json, LambdaError, LambdaState};
use crate::context::{Audience, CallContext, Sealer, Voicemail, MAX_SEALED_CHARS};
use crate::registry::once::{self, Begin, StoredAnswer};
use crate::registry::ClaimError;
use crate::twilio::twiml::say_then_hang_up;
use request::{validate, CallRequest, Outbound};

/// Route of the answer webhook, below the API's base URL.
pub const ANSWER_ROUTE: &str = "/calls/answer";
/// Route of the AMD callback.
pub const AMD_ROUTE: &str = "/calls/amd";
/// The header Twilio repeats on a retried webhook.
pub const TWILIO_IDEMPOTENCY_TOKEN: &str = "i-twilio-idempotency-token";
/// Route of the call-status callback (the final status).
pub const STATUS_ROUTE: &str = "/calls/status";
/// Longest URL Twilio accepts in a call's `Url` and callbacks.
const MAX_URL_CHARS: usize = 4000;
/// The refusal of a context too large to travel in the URLs and the stream token.
const TOO_LARGE: &str =
    "prompt, firstMessage and dynamicVariables together are too large for one call (about 1.7 KB)";

/// The header a client sends to make a retried `POST /calls` place no second call.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// How long a duplicate waits for the first request's answer.
const IDEMPOTENCY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `POST /calls` (bearer `CALLS_API_KEY`): validates, checks `OUTBOUND_ALLOWLIST`, creates
/// the call once per `Idempotency-Key`, answers 201 `{"callSid","status"}`.
pub(super) async fn create(
    state: &LambdaState,
    req: &Request,
) -> Result<Response<Body>, LambdaError> {
    let key = state
        .calls_api_key
        .as_ref()
        .ok_or(LambdaError::OutboundNotConfigured)?;
    bearer_key_of(key, "CALLS_API_KEY", req)?;
    let idempotency_key = idempotency_key(req)?;
    let request: CallRequest = serde_json::from_slice(body_bytes(req)).map_err(|e| {
        LambdaError::InvalidRequest(if e.is_data() {
            "body fields missing, unknown or of the wrong type (to is required)"
        } else {
            "body is not a JSON object"
        })
    })?;
    let outbound = validate(request, state.config.outbound_from.as_deref())?;
    if !state.config.outbound_allowlist.allows(&outbound.to) {
        // Toll fraud stops here: nothing goes to Twilio. The number is never logged.
        return Err(LambdaError::DestinationNotAllowed);
    }
    let Some(key) = idempotency_key else {
        let (status, body) = place(state, req, &outbound).await?;
        return json(status, &body);
    };
    let registry = state.registry.as_ref().ok_or(LambdaError::InvalidRequest(
        "Idempotency-Key needs CALL_REGISTRY_TABLE on this function",
    ))?;
    let metrics = &state.registry_metrics;
    let request_hash = once::request_hash(body_bytes(req));
    let unavailable = |e: ClaimError| LambdaError::RegistryUnavailable(e.to_string());
    let waited = std::time::Instant::now();
    let ticket = loop {
        match registry
            .idempotency_begin("calls", key, &request_hash, metrics)
            .await
            .map_err(unavailable)?
        {
            Begin::Fresh(ticket) => break ticket,
            Begin::Done(answer) => {
                tracing::info!(status = answer.status, "idempotent replay of POST /calls");
                return replayed(&answer);
            }
            Begin::Mismatch => return Err(LambdaError::IdempotencyKeyReused),
            Begin::Pending if waited.elapsed() < IDEMPOTENCY_WAIT => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Begin::Pending => return Err(LambdaError::IdempotencyKeyInUse),
        }
    };
    match place(state, req, &outbound).await {
        Ok((status, body)) => {
            let answer = StoredAnswer {
                status: status.as_u16(),
                body: body.to_string(),
            };
            if let Err(e) = registry.idempotency_finish(&ticket, &answer, metrics).await {
                // The call is placed; a retry will wait, then be told the key is in use.
                tracing::warn!(error = %e, "idempotency record not completed");
            }
            json(status, &body)
        }
        // Twilio may have placed the call (no answer, or none readable): the retry gets this
        // answer too, never a second call.
        Err(e) if e.outcome_unknown() => {
            let answer = StoredAnswer {
                status: e.status().as_u16(),
                body: match e.to_response().into_body() {
                    Body::Text(text) => text,
                    _ => String::new(),
                },
            };
            if let Err(stored) = registry.idempotency_finish(&ticket, &answer, metrics).await {
                tracing::warn!(error = %stored, "idempotency record not completed");
            }
            Err(e)
        }
        // Twilio refused: nothing was placed, and a retry may try again.
        Err(e) => {
            registry.idempotency_abandon(&ticket, metrics).await;
            Err(e)
        }
    }
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
fn idempotency_key(req: &Request) -> Result<Option<&str>, LambdaError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty()
                && k.len() <= MAX_IDEMPOTENCY_KEY
                && k.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(Some)
        .ok_or(LambdaError::InvalidRequest(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ))
}

/// The first answer again, marked as a replay.
fn replayed(answer: &StoredAnswer) -> Result<Response<Body>, LambdaError> {
    Ok(Response::builder()
        .status(answer.status)
        .header(lambda_http::http::header::CONTENT_TYPE, "application/json")
        .header("idempotent-replayed", "true")
        .body(Body::Text(answer.body.clone()))?)
}

/// Creates the call with Twilio: the 201 answer's status and body.
async fn place(
    state: &LambdaState,
    req: &Request,
    outbound: &Outbound,
) -> Result<(StatusCode, serde_json::Value), LambdaError> {
    let rest = state
        .rest
        .as_ref()
        .ok_or(LambdaError::OutboundNotConfigured)?;
    // A slot for the ringing call, under a name of its own until Twilio names the CallSid.
    let pending = format!("pending#{}", uuid::Uuid::new_v4().simple());
    let slot = match admission::admit(state, &pending, admission::RINGING_LEASE).await {
        admission::Door::Full => return Err(LambdaError::AtCapacity),
        admission::Door::Admitted(slot) => Some(slot),
        admission::Door::Open => None,
    };
    let placed = create_call(state, req, rest, outbound).await;
    if let (Some(slot), Some(registry)) = (&slot, &state.registry) {
        let metrics = &state.registry_metrics;
        match &placed {
            Ok((_, body)) => {
                let call_sid = body["callSid"].as_str().unwrap_or_default();
                if let Err(e) = registry
                    .hand_over_slot(slot, call_sid, admission::RINGING_LEASE, metrics)
                    .await
                {
                    tracing::warn!(error = %e, "agent slot not handed to the call; it expires");
                }
            }
            Err(_) => registry.release_slot(slot, metrics).await,
        }
    }
    placed
}

/// The REST create of an outbound call: the 201 answer's status and body.
async fn create_call(
    state: &LambdaState,
    req: &Request,
    rest: &crate::twilio::rest::TwilioRest,
    outbound: &Outbound,
) -> Result<(StatusCode, serde_json::Value), LambdaError> {
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
    Ok((
        StatusCode::CREATED,
        serde_json::json!({"callSid": call.sid, "status": call.status}),
    ))
}

/// `POST /calls/answer`: Twilio's request when the callee answers.
pub(super) async fn answer(
    state: &LambdaState,
    req: &Request,
) -> Result<Response<Body>, LambdaError> {
    let url = signed_url(state, req, ANSWER_ROUTE)?;
    let form = verified_form(state, req, &url)?;
    let context: CallContext = open(state, req, Audience::Answer)?;
    let call_sid = form.call_sid();
    // The slot `POST /calls` took is this call's now; renewed until the stream starts.
    if admission::admit(state, call_sid, admission::STREAM_START_LEASE).await
        == admission::Door::Full
    {
        tracing::info!(
            call_sid,
            "outbound call answered over the agent plan: overflow twiml"
        );
        return Ok(admission::overflow_twiml(state));
    }
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
    // Twilio retries a callback it got no timely answer for, with the same token: the
    // voicemail must not be left (or the call hung up) twice.
    let delivery = match (&state.registry, req.headers().get(TWILIO_IDEMPOTENCY_TOKEN)) {
        (Some(registry), Some(token)) if verdict == Verdict::Machine => {
            let token = token.to_str().unwrap_or_default();
            match registry
                .first_delivery("amd", token, &state.registry_metrics)
                .await
            {
                Ok(ticket) => Some((registry, ticket)),
                Err(ClaimError::Taken) => {
                    tracing::info!(call_sid, "retried AMD callback: already acted on");
                    return json(
                        StatusCode::OK,
                        &serde_json::json!({"ok": true, "action": "duplicate"}),
                    );
                }
                Err(ClaimError::Unavailable(cause)) => {
                    // Acting twice on a retry beats leaving the agent talking to a machine.
                    tracing::warn!(error = %cause, "call registry unavailable; AMD callback not deduplicated");
                    None
                }
            }
        }
        _ => None,
    };
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
            Err(e) => {
                // Not done: Twilio's retry of this callback must act.
                if let Some((registry, ticket)) = &delivery {
                    registry
                        .idempotency_abandon(ticket, &state.registry_metrics)
                        .await;
                }
                return Err(LambdaError::Twilio(e));
            }
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
/// status, whatever it was), for outbound calls and for numbers whose status callback points
/// here. Counted, logged with ids only, sent as `Call Completed` with `CALL_EVENTS_BUS`,
/// answered 200 (a failing bus is logged, not retried by Twilio).
pub(super) async fn status(
    state: &LambdaState,
    req: &Request,
) -> Result<Response<Body>, LambdaError> {
    let url = signed_url(state, req, STATUS_ROUTE)?;
    let form = verified_form(state, req, &url)?;
    let status = outcome::status_label(form.field("CallStatus").unwrap_or_default());
    let duration_s = number(form.field("CallDuration"));
    if let Some(bus) = &state.events {
        let record = crate::record::call_completed(
            form.call_sid(),
            form.field("Direction"),
            status,
            duration_s,
            form.field("AnsweredBy"),
            std::time::SystemTime::now(),
        );
        if let Err(code) = bus.publish(crate::record::CALL_COMPLETED, &record).await {
            tracing::warn!(error_code = %code, "Call Completed event not sent");
        }
    }
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

mod request;

#[cfg(test)]
mod tests;
