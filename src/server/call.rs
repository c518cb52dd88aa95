//! A call inside the server: completes the upgrade, runs [`crate::call::run`] on the socket
//! with the server's agent, claims and limits, contains a panic to its own call and writes
//! the one summary log line.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt as _;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument as _;

use super::{AppState, CallClaim};
use crate::auth::Grant;
use crate::call::AgentConnector as _;
use crate::call::{self, Host, Limits, Summary};
use crate::context::CallContext;
use crate::metrics::Metrics;
use crate::registry::slots::{Admission, Slot};
use crate::registry::ClaimError;
use crate::relay::{AgentMode, EndReason, Ending, Outcome, RelayConfig};
use crate::twilio::rest::RestError;

/// The server as the call loop sees it.
struct Server<'a>(&'a Arc<AppState>);

/// What a live call holds: its CallSid claim (bound streams) and its agent slot (when the
/// fleet counts them). Released before the stream closes; a hold dropped without release
/// (a panic) still frees both.
pub struct Hold {
    state: Arc<AppState>,
    claim: Option<CallClaim>,
    slot: Option<Slot>,
}

impl Hold {
    async fn release(mut self) {
        if let (Some(slot), Some(registry)) = (self.slot.take(), &self.state.registry) {
            registry.drop_slot(&slot, &self.state.metrics).await;
        }
        if let Some(claim) = self.claim.take() {
            claim.release().await;
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let (Some(slot), Some(registry)) = (self.slot.take(), &self.state.registry) else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            let (registry, state) = (Arc::clone(registry), Arc::clone(&self.state));
            self.state.calls.spawn(async move {
                registry.drop_slot(&slot, &state.metrics).await;
            });
        } else {
            registry.forget_slot(&slot);
        }
    }
}

impl Server<'_> {
    /// The CallSid claim of a bound stream: this process, then the fleet.
    async fn claim_call_sid(&self, call_sid: &str) -> Result<CallClaim, Ending> {
        let duplicate = || {
            tracing::warn!("second stream for a live call refused");
            Ending::of(EndReason::Duplicate)
        };
        let mut claim = self.0.claim_call(call_sid).ok_or_else(duplicate)?;
        // Boxed: the SDK's futures are large, and an unboxed one would size every call's
        // claim step by them, registry or not.
        match Box::pin(claim.claim_fleet()).await {
            Ok(()) => Ok(claim),
            Err(ClaimError::Taken) => Err(duplicate()),
            Err(ClaimError::Unavailable(cause)) => Err(registry_unavailable(&cause)),
        }
    }

    /// An agent slot for `holder`, when the fleet counts them and this call has an agent.
    async fn admit(&self, holder: &str) -> Result<Option<Slot>, Ending> {
        let state = self.0;
        let (Some(admission), Some(registry)) = (&state.config.admission, &state.registry) else {
            return Ok(None);
        };
        if !matches!(state.agent.mode(), AgentMode::Remote { .. }) {
            return Ok(None);
        }
        let lease = state
            .config
            .call_registry
            .as_ref()
            .map_or(std::time::Duration::from_secs(60), |r| r.lease);
        match Box::pin(registry.admit(holder, admission.limit, lease, &state.metrics)).await {
            Ok(Admission::Admitted { slot, in_use }) => {
                state.metrics.admission("admitted", Some(in_use));
                registry.keep_slot(slot.clone());
                Ok(Some(slot))
            }
            Ok(Admission::Full) => {
                state.metrics.admission("overflow", Some(admission.limit));
                tracing::warn!(
                    limit = admission.limit,
                    "agent plan full, call sent to overflow"
                );
                Err(Ending::overflow())
            }
            Err(e) => {
                state.metrics.admission("error", None);
                Err(registry_unavailable(&e.to_string()))
            }
        }
    }
}

fn registry_unavailable(cause: &str) -> Ending {
    tracing::error!(error = %cause, "call registry unavailable, refusing the call");
    Ending::of(EndReason::RegistryUnavailable)
}

impl Host for Server<'_> {
    type Claim = Hold;

    fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    async fn hang_up(&self, call_sid: &str) -> Result<(), RestError> {
        match &self.0.twilio {
            Some(rest) => rest.hang_up(call_sid).await,
            None => Err(RestError::NotConfigured),
        }
    }

    async fn redirect(&self, call_sid: &str, twiml: &str) -> Result<(), RestError> {
        match &self.0.twilio {
            Some(rest) => rest.redirect_twiml(call_sid, twiml).await,
            None => Err(RestError::NotConfigured),
        }
    }

    async fn overflow(&self, call_sid: &str) -> Result<(), RestError> {
        match &self.0.twilio {
            Some(rest) => {
                let o = &self.0.config.overflow;
                let twiml = crate::twilio::twiml::overflow(o.number.as_deref(), &o.message);
                rest.redirect_twiml(call_sid, &twiml).await
            }
            None => Err(RestError::NotConfigured),
        }
    }

    async fn release(&self, hold: Hold) {
        hold.release().await;
    }

    async fn claim(&self, call_sid: &str, bound: bool) -> Result<Hold, Ending> {
        let claim = match bound {
            true => Some(self.claim_call_sid(call_sid).await?),
            false => None,
        };
        // An unbound stream's CallSid is only its client's word: its slot is its own.
        let holder = match bound {
            true => call_sid.to_string(),
            false => format!("stream#{}", uuid::Uuid::new_v4().simple()),
        };
        let slot = self.admit(&holder).await?;
        Ok(Hold {
            state: Arc::clone(self.0),
            claim,
            slot,
        })
    }
}

/// The relay settings of this server's calls.
fn relay_config(state: &AppState, context: Option<Arc<CallContext>>) -> RelayConfig {
    RelayConfig {
        stream: state.config.stream.clone(),
        agent: state.agent.mode(),
        control: state.config.call_control.policy.clone(),
        context,
    }
}

/// Completes the upgrade and runs the call; the permit is held until the call ends.
pub(crate) async fn accept(
    on_upgrade: OnUpgrade,
    state: Arc<AppState>,
    grant: Grant,
    permit: OwnedSemaphorePermit,
    peer: SocketAddr,
) {
    let conn_id = uuid::Uuid::new_v4().simple().to_string();
    let span = tracing::info_span!(
        "call",
        conn_id = %conn_id,
        %peer,
        stream_sid = tracing::field::Empty,
        call_sid = tracing::field::Empty,
        conversation_id = tracing::field::Empty,
    );
    async move {
        let upgraded =
            match tokio::time::timeout(state.config.server.handshake_timeout, on_upgrade).await {
                Ok(Ok(upgraded)) => upgraded,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("upgrade timed out");
                    return;
                }
            };
        let ws = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(state.websocket_config()),
        )
        .await;
        let limits = Limits {
            max_buffered_bytes: state.config.server.max_buffered_bytes,
        };
        let host = Server(&state);
        let call = call::run(
            ws,
            &state.agent,
            &host,
            relay_config(&state, grant.context),
            grant.call_sid,
            limits,
            state.stops.register(),
        );
        supervise(&state, call).await;
        drop(permit);
    }
    .instrument(span)
    .await;
}

/// Runs one call's future with accounting: active gauge, outcome, duration, the summary log
/// line — and a panic inside it ends only this call (counted as `panic`).
pub async fn supervise<F>(state: &AppState, call: F) -> Summary
where
    F: Future<Output = Summary>,
{
    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
    let active = state.metrics.call_started();
    state.publish_active_calls();
    tracing::info!(active_calls = active, "call accepted");
    let summary = match AssertUnwindSafe(call).catch_unwind().await {
        Ok(summary) => summary,
        Err(_) => {
            tracing::error!("call task panicked; call ended");
            Summary::new(Outcome::panic, None, "internal error")
        }
    };
    let elapsed = started.elapsed();
    state
        .metrics
        .call_ended(summary.outcome, elapsed.as_secs_f64());
    state.publish_active_calls();
    tracing::info!(
        outcome = ?summary.outcome,
        close_code = summary.close_code,
        reason = summary.reason,
        frames_in = summary.frames_in,
        frames_out = summary.frames_out,
        dropped = summary.dropped,
        duration_ms = elapsed.as_millis() as u64,
        "call closed"
    );
    if let Some(report) = &summary.report {
        let ended_at = started_at + elapsed;
        let record =
            crate::record::call_ended(&summary, report, started_at, ended_at, &state.origin);
        crate::record::log("call record", &record);
        if let Some(emf) = &state.config.emf {
            let first_audio = report.facts.first_audio.map(|d| d.as_millis() as u64);
            let line = crate::ecs::call_line(emf, report.ending, first_audio, crate::ecs::now_ms());
            crate::ecs::print(&line);
        }
        if let Some(bus) = &state.bus {
            bus.publish(crate::record::CALL_ENDED, &record);
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::Config;

    #[tokio::test]
    async fn a_panicking_call_is_contained_and_counted() {
        let config = Config::from_source(&HashMap::<&str, &str>::new()).unwrap();
        let state = AppState::new(config).unwrap();
        let summary = supervise(&state, async {
            if state.metrics.active_calls() == 1 {
                panic!("bug in a call");
            }
            Summary::new(Outcome::normal, None, "unreachable")
        })
        .await;
        assert_eq!(summary.outcome, Outcome::panic);
        assert_eq!(state.metrics.active_calls(), 0);
        assert!(state
            .metrics
            .render()
            .contains("media_calls_total{outcome=\"panic\"} 1"));
        // The runtime and the server state are intact: the next call runs normally.
        let next = supervise(&state, async {
            Summary::new(Outcome::normal, Some(1000), "ok")
        })
        .await;
        assert_eq!(next.outcome, Outcome::normal);
    }
}
