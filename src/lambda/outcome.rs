//! Outbound call outcomes as CloudWatch metrics: one Embedded Metric Format line on stdout
//! per AMD verdict and per final call status. Lambda ships stdout to CloudWatch Logs, which
//! turns the lines into metrics: no agent, no API call, nothing added to the request's
//! latency. A line carries only constant labels and durations, never a value of the call.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Twilio's documented `AnsweredBy` values; anything else is reported as `other`.
const ANSWERED_BY: [&str; 7] = [
    "human",
    "unknown",
    "fax",
    "machine_start",
    "machine_end_beep",
    "machine_end_silence",
    "machine_end_other",
];

/// Twilio's call statuses; anything else is reported as `other`.
const CALL_STATUS: [&str; 9] = [
    "queued",
    "initiated",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "no-answer",
    "failed",
    "canceled",
];

/// Twilio's `DialCallStatus` values; anything else is reported as `other`.
const DIAL_CALL_STATUS: [&str; 6] = [
    "completed",
    "answered",
    "busy",
    "no-answer",
    "failed",
    "canceled",
];

/// Something worth counting about a call the Lambda hears of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The AMD verdict and how long detection took.
    Amd {
        answered_by: &'static str,
        detection_ms: Option<u64>,
    },
    /// The call's final status and its duration.
    Status {
        status: &'static str,
        duration_s: Option<u64>,
    },
    /// A Twilio webhook on `route` failed inside and answered the fallback TwiML.
    WebhookError { route: &'static str },
    /// An admission against `AGENT_CONCURRENCY_LIMIT` (`admitted`, `overflow`, `error`), with
    /// the fleet's live agent slots when known.
    Admission {
        result: &'static str,
        in_use: Option<u64>,
    },
    /// A transfer's `<Dial>` ended (`DialCallStatus`) after this many seconds bridged.
    Transfer {
        dial_status: &'static str,
        duration_s: Option<u64>,
    },
}

/// `DialCallStatus` as a constant label.
pub(super) fn dial_status_label(status: &str) -> &'static str {
    label(&DIAL_CALL_STATUS, status)
}

/// `answered_by` as a constant label.
pub(super) fn answered_by_label(answered_by: &str) -> &'static str {
    label(&ANSWERED_BY, answered_by)
}

/// `status` as a constant label.
pub(super) fn status_label(status: &str) -> &'static str {
    label(&CALL_STATUS, status)
}

fn label(known: &[&'static str], value: &str) -> &'static str {
    known
        .iter()
        .find(|k| **k == value)
        .copied()
        .unwrap_or("other")
}

/// The EMF line for `outcome` in `namespace`.
pub(super) fn emf_line(namespace: &str, outcome: Outcome, timestamp_ms: u64) -> String {
    let (dimension, value, count, duration, unit, measured) = match outcome {
        Outcome::Amd {
            answered_by,
            detection_ms,
        } => (
            "AnsweredBy",
            answered_by,
            "OutboundAmdVerdicts",
            "AmdDetectionTime",
            "Milliseconds",
            detection_ms,
        ),
        Outcome::Status { status, duration_s } => (
            "CallStatus",
            status,
            "OutboundCalls",
            "OutboundCallDuration",
            "Seconds",
            duration_s,
        ),
        Outcome::WebhookError { route } => ("Route", route, "WebhookErrors", "", "", None),
        Outcome::Admission { result, in_use } => (
            "Result",
            result,
            "Admissions",
            "AgentSlotsInUse",
            "Count",
            in_use,
        ),
        Outcome::Transfer {
            dial_status,
            duration_s,
        } => (
            "DialCallStatus",
            dial_status,
            "Transfers",
            "TransferDuration",
            "Seconds",
            duration_s,
        ),
    };
    let mut metrics = vec![serde_json::json!({"Name": count, "Unit": "Count"})];
    let mut line = serde_json::json!({
        dimension: value,
        count: 1,
    });
    if let Some(measured) = measured {
        metrics.push(serde_json::json!({"Name": duration, "Unit": unit}));
        line[duration] = measured.into();
    }
    line["_aws"] = serde_json::json!({
        "Timestamp": timestamp_ms,
        "CloudWatchMetrics": [{
            "Namespace": namespace,
            "Dimensions": [[dimension]],
            "Metrics": metrics,
        }],
    });
    line.to_string()
}

/// Prints the EMF line for `outcome` (a lost stdout loses only the metric).
pub(super) fn publish(namespace: &str, outcome: Outcome) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let line = emf_line(namespace, outcome, now);
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_the_emf_structure_and_constant_labels_only() {
        let line = emf_line(
            "MediaOrchestrator",
            Outcome::Status {
                status: status_label("no-answer"),
                duration_s: Some(0),
            },
            1_700_000_000_123,
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        let m = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_123u64);
        assert_eq!(m["Namespace"], "MediaOrchestrator");
        assert_eq!(m["Dimensions"], serde_json::json!([["CallStatus"]]));
        assert_eq!(m["Metrics"][0]["Name"], "OutboundCalls");
        assert_eq!(m["Metrics"][1]["Unit"], "Seconds");
        assert_eq!(v["CallStatus"], "no-answer");
        assert_eq!(v["OutboundCalls"], 1);
        assert_eq!(v["OutboundCallDuration"], 0);

        let line = emf_line(
            "NS",
            Outcome::Amd {
                answered_by: answered_by_label("+15551230000"),
                detection_ms: None,
            },
            1,
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(v["AnsweredBy"], "other", "an unknown value is never copied");
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .map(Vec::len),
            Some(1),
            "no duration metric without a duration"
        );
        assert_eq!(status_label("busy"), "busy");
        assert_eq!(answered_by_label("machine_end_beep"), "machine_end_beep");
    }
}
