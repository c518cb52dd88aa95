//! Admission against the agent plan (`AGENT_CONCURRENCY_LIMIT`) at the door: the voice and answer
//! webhooks hold a slot until the stream starts (then `media-ws` holds it) or answer the overflow
//! TwiML; `POST /calls` holds one from the create until the callee answers, or answers 429. An
//! unreadable registry lets the call through (logged, counted as `error`): `media-ws` checks
//! again at `start` and fails closed there.

use std::time::Duration;

use lambda_http::http::header::{HeaderValue, CONTENT_TYPE};
use lambda_http::{Body, Response};

use super::outcome::{self, Outcome};
use super::LambdaState;
use crate::registry::slots::{Admission, Slot};

/// How long a webhook's slot waits for the stream to start.
pub(super) const STREAM_START_LEASE: Duration = Duration::from_secs(30);
/// How long an outbound call's slot waits for the callee to answer (Twilio rings for 60 s).
pub(super) const RINGING_LEASE: Duration = Duration::from_secs(120);
/// The `Retry-After` of a `POST /calls` at the limit.
pub(super) const RETRY_AFTER_SECONDS: u64 = 30;

/// What the door decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Door {
    /// No limit configured, or the registry could not say: go ahead.
    Open,
    /// Admitted on this slot.
    Admitted(Slot),
    /// Every slot is live.
    Full,
}

/// Admits `holder` for `lease`.
pub(super) async fn admit(state: &LambdaState, holder: &str, lease: Duration) -> Door {
    let (Some(admission), Some(registry)) = (&state.config.admission, &state.registry) else {
        return Door::Open;
    };
    let publish = |result, in_use: Option<u32>| {
        outcome::publish(
            &state.config.metric_namespace,
            Outcome::Admission {
                result,
                in_use: in_use.map(u64::from),
            },
        );
    };
    match registry
        .admit(holder, admission.limit, lease, &state.registry_metrics)
        .await
    {
        Ok(Admission::Admitted { slot, in_use }) => {
            publish("admitted", Some(in_use));
            Door::Admitted(slot)
        }
        Ok(Admission::Full) => {
            publish("overflow", Some(admission.limit));
            tracing::warn!(
                limit = admission.limit,
                "agent plan full, call sent to overflow"
            );
            Door::Full
        }
        Err(e) => {
            publish("error", None);
            tracing::error!(error = %e, "call registry unavailable, admitting without a slot");
            Door::Open
        }
    }
}

/// The overflow TwiML, 200 (Twilio plays it).
pub(super) fn overflow_twiml(state: &LambdaState) -> Response<Body> {
    let overflow = state
        .config
        .admission
        .as_ref()
        .map(|a| a.overflow.clone())
        .unwrap_or_default();
    let twiml = crate::twilio::twiml::overflow(overflow.number.as_deref(), &overflow.message);
    let mut resp = Response::new(Body::Text(twiml));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    resp
}
