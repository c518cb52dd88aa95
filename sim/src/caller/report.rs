//! Reading a call's report: REST requests merged into the timeline, and how the call ended.

use super::*;

/// Adds the REST requests a fake Twilio saw to the timeline, in time order (`opened`: when
/// the call's socket opened).
pub fn add_rest_requests(
    report: &mut CallReport,
    opened: Instant,
    requests: &[crate::twilio_rest::RestRequest],
) {
    for r in requests {
        report.timeline.push(TimelineEntry {
            at: r.at.saturating_duration_since(opened),
            step: Step::Rest(r.describe()),
        });
    }
    report.timeline.sort_by_key(|e| e.at);
}

/// How the call ended, in words, from `media-ws`'s close reason and what the REST API saw.
pub fn ending(report: &CallReport) -> String {
    let rest = report.timeline.iter().rev().find_map(|e| match &e.step {
        Step::Rest(what) => Some(what.as_str()),
        _ => None,
    });
    let stopped = report.timeline.iter().any(|e| e.step == Step::StopSent);
    let closed = report.timeline.iter().find_map(|e| match &e.step {
        Step::Closed { code, reason } => Some((*code, reason.as_str())),
        _ => None,
    });
    match (closed, rest) {
        (Some((1000, "transferred")), Some(what)) => format!("transferred ({what})"),
        (Some((1000, "transferred")), None) => "transferred".to_string(),
        (Some((1000, "agent ended" | "agent hung up")), Some(_)) => {
            "hang-up by the agent, after its last words played".to_string()
        }
        (Some((1000, "agent ended" | "agent hung up")), None) => {
            "the agent ended; stream closed after its last words (Twilio runs what follows \
             <Connect>)"
                .to_string()
        }
        (Some((1000, reason @ ("max duration" | "server draining"))), Some(_)) => {
            format!(
                "hang-up at the {}, after the agent's last words played",
                limit(reason)
            )
        }
        (Some((1000, reason @ ("max duration" | "server draining"))), None) => format!(
            "stream closed at the {}, after the agent's last words (Twilio runs what follows \
             <Connect>)",
            limit(reason)
        ),
        (
            Some((
                1000,
                reason @ ("agent closed"
                | "agent unavailable"
                | "agent unresponsive"
                | "agent protocol error"
                | "transfer failed"),
            )),
            _,
        ) => {
            format!("fallback: handed back to Twilio ({reason})")
        }
        _ if stopped => "the caller hung up".to_string(),
        (Some((code, reason)), _) => format!("closed by media-ws: {code} {reason:?}"),
        (None, _) => "connection lost".to_string(),
    }
}

/// The limit a forced ending's close reason names.
fn limit(reason: &str) -> &'static str {
    if reason == "max duration" {
        "call's time limit (MAX_CALL_SECONDS)"
    } else {
        "server's drain (SIGTERM)"
    }
}
