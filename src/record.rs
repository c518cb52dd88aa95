//! One call record per call: ids, timings and counts, built once when the stream ends, written
//! as one JSON log line (Logs Insights queries it) and, with `CALL_EVENTS_BUS`, sent as the
//! `Call Ended` event. Never phone numbers, parameter or override values, digits or text.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use crate::call::{CallReport, Summary};
use crate::relay::LatencyTally;

/// EventBridge `Source` of every event this service publishes.
pub const SOURCE: &str = "media-orchestrator";
/// `DetailType` of a stream's record (media-ws).
pub const CALL_ENDED: &str = "Call Ended";
/// `DetailType` of Twilio's final call status (media-lambda).
pub const CALL_COMPLETED: &str = "Call Completed";

/// Where the record was made: the ECS task (its ARN) or the host, and the build.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The ECS task ARN, or the host name.
    pub task: String,
    /// The crate version.
    pub version: &'static str,
}

impl Origin {
    /// This process: `task` as found at startup.
    pub fn new(task: impl Into<String>) -> Self {
        Self {
            task: task.into(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// An instant as RFC 3339 with milliseconds (`2026-12-04T10:00:00.123Z`).
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

fn latency(t: &LatencyTally) -> Value {
    match (t.quantile_ms(0.5), t.quantile_ms(0.99)) {
        (Some(p50), Some(p99)) => json!({"p50": p50, "p99": p99}),
        _ => Value::Null,
    }
}

fn millis(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(d.as_millis() as u64))
}

/// The record of a stream that started and ended (`ended_at` - `started_at` long).
pub fn call_ended(
    summary: &Summary,
    report: &CallReport,
    started_at: SystemTime,
    ended_at: SystemTime,
    origin: &Origin,
) -> Map<String, Value> {
    let f = &report.facts;
    let duration = ended_at.duration_since(started_at).unwrap_or_default();
    let transfer = f.transfer.map_or(
        Value::Null,
        |status| json!({"status": status, "twilioCode": report.transfer_code}),
    );
    let record = json!({
        "callSid": f.call_sid,
        "streamSid": f.stream_sid,
        "accountSid": f.account_sid,
        "conversationId": f.conversation_id,
        "direction": f.direction.as_str(),
        "startedAt": rfc3339(started_at),
        "endedAt": rfc3339(ended_at),
        "durationMs": duration.as_millis() as u64,
        "ending": report.ending,
        "closeCode": summary.close_code,
        "agentConnectMs": millis(f.agent_connect),
        "firstAudioMs": millis(f.first_audio),
        "bargeIns": f.barge_ins,
        "keypadEntries": f.keypad_entries,
        "toolCalls": f.tool_calls,
        "transfer": transfer,
        "framesIn": summary.frames_in,
        "framesOut": summary.frames_out,
        "framesDropped": summary.dropped,
        "bridgeLatencyMs": {
            "inbound": latency(&report.bridge[0]),
            "outbound": latency(&report.bridge[1]),
        },
        "agentFormat": f.agent_format,
        "task": origin.task,
        "version": origin.version,
    });
    match record {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Twilio's final status of a call (media-lambda's `/calls/status`): joins the `Call Ended`
/// record on `callSid`. `status` and `answered_by` are constants (Twilio's vocabularies, the
/// latter kept only when it is one of them); the direction is reduced to in or out.
pub fn call_completed(
    call_sid: &str,
    direction: Option<&str>,
    status: &'static str,
    duration_s: Option<u64>,
    answered_by: Option<&str>,
    at: SystemTime,
) -> Map<String, Value> {
    const ANSWERED_BY: &[&str] = &[
        "human",
        "machine_start",
        "machine_end_beep",
        "machine_end_silence",
        "machine_end_other",
        "fax",
        "unknown",
    ];
    let answered_by = answered_by.and_then(|a| ANSWERED_BY.iter().find(|k| **k == a));
    let record = json!({
        "callSid": call_sid,
        "direction": crate::relay::Direction::of(direction).as_str(),
        "callStatus": status,
        "callDurationSeconds": duration_s,
        "answeredBy": answered_by,
        "timestamp": rfc3339(at),
    });
    match record {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Prints `record` as one JSON log line, beside the `tracing` lines (`message`: `name`).
pub fn log(name: &str, record: &Map<String, Value>) {
    let mut line = Map::new();
    line.insert("timestamp".into(), json!(rfc3339(SystemTime::now())));
    line.insert("level".into(), json!("INFO"));
    line.insert("message".into(), json!(name));
    line.extend(record.iter().map(|(k, v)| (k.clone(), v.clone())));
    let text = Value::Object(line).to_string();
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// This process's task: the ECS task ARN from the task metadata endpoint
/// (`ECS_CONTAINER_METADATA_URI_V4`), else `HOSTNAME`, else `unknown`.
pub async fn find_task() -> String {
    if let Ok(uri) = std::env::var("ECS_CONTAINER_METADATA_URI_V4") {
        if let Some(arn) = task_arn(&uri).await {
            return arn;
        }
    }
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// `GET <uri>/task` → `TaskARN` (2 s at most: startup must not hang on it).
async fn task_arn(uri: &str) -> Option<String> {
    use http_body_util::{BodyExt as _, Empty};
    let url: hyper::Uri = format!("{}/task", uri.trim_end_matches('/')).parse().ok()?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let fetch = async {
        let response = client.get(url).await.ok()?;
        let body = response.into_body().collect().await.ok()?.to_bytes();
        let v: Value = serde_json::from_slice(&body).ok()?;
        v["TaskARN"].as_str().map(str::to_string)
    };
    tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()
        .flatten()
}
