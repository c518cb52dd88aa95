//! ECS integration of `media-ws`: scale-in protection while calls are live (the ECS agent's
//! `task-protection/v1/state`) and the active-calls metric as EMF lines on stdout. Protection is
//! set for `TASK_PROTECTION_MINUTES` when the task turns busy and cleared when it is idle, never
//! renewed while busy: it also holds back deployments, and a never-idle task must not block one
//! forever.

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tokio::sync::watch;

/// Settings of the task-protection loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskProtection {
    /// `$ECS_AGENT_URI` (injected by ECS into every container).
    pub agent_uri: String,
    /// `ExpiresInMinutes` sent with each protection (1–2880).
    pub minutes: u32,
}

/// Settings of the EMF publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emf {
    /// How often a line is printed.
    pub interval: Duration,
    /// CloudWatch namespace.
    pub namespace: String,
    /// Value of the `ServiceName` dimension.
    pub service_name: String,
}

/// Why a protection request failed.
#[derive(Debug, thiserror::Error)]
pub enum EcsError {
    /// The request could not be built or sent.
    #[error("ecs agent request failed")]
    Request,
    /// The agent answered with an error status or an error body.
    #[error("ecs agent refused with status {0}")]
    Refused(u16),
}

/// The JSON body of a protection request.
pub fn protection_body(enabled: bool, minutes: u32) -> String {
    if enabled {
        format!(r#"{{"ProtectionEnabled":true,"ExpiresInMinutes":{minutes}}}"#)
    } else {
        r#"{"ProtectionEnabled":false}"#.to_string()
    }
}

/// Keeps protection in line with the number of live calls until `active` closes.
pub async fn protect_while_busy(settings: TaskProtection, mut active: watch::Receiver<i64>) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let url = format!(
        "{}/task-protection/v1/state",
        settings.agent_uri.trim_end_matches('/')
    );
    let mut protected = false;
    loop {
        let busy = *active.borrow_and_update() > 0;
        if busy != protected {
            match put(&client, &url, protection_body(busy, settings.minutes)).await {
                Ok(()) => {
                    protected = busy;
                    tracing::info!(protected, "task scale-in protection updated");
                }
                Err(e) => {
                    tracing::warn!(error = %e, wanted = busy, "task scale-in protection not updated");
                    // Retry soon, or sooner if the call count changes.
                    let _ = tokio::time::timeout(Duration::from_secs(2), active.changed()).await;
                    continue;
                }
            }
        }
        if active.changed().await.is_err() {
            return;
        }
    }
}

async fn put(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    body: String,
) -> Result<(), EcsError> {
    let request = hyper::Request::put(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| EcsError::Request)?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.request(request))
        .await
        .map_err(|_| EcsError::Request)?
        .map_err(|_| EcsError::Request)?;
    let status = response.status();
    if !status.is_success() {
        return Err(EcsError::Refused(status.as_u16()));
    }
    Ok(())
}

/// One EMF line reporting `active_calls`.
pub fn emf_line(settings: &Emf, active_calls: i64, timestamp_ms: u128) -> String {
    serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms as u64,
            "CloudWatchMetrics": [{
                "Namespace": settings.namespace,
                "Dimensions": [["ServiceName"]],
                "Metrics": [{"Name": "ActiveCalls", "Unit": "Count"}],
            }],
        },
        "ServiceName": settings.service_name,
        "ActiveCalls": active_calls,
    })
    .to_string()
}

/// Names of the per-interval counts, in [`crate::metrics::Metrics::emf_totals`]'s order.
pub const INTERVAL_COUNTS: [&str; 3] =
    ["HandshakeRejections", "RegistryErrors", "TwilioRestErrors"];

/// One EMF line of what happened in the last interval: `counts` in [`INTERVAL_COUNTS`] order.
pub fn interval_line(settings: &Emf, counts: [u64; 3], timestamp_ms: u128) -> String {
    let mut line = serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms as u64,
            "CloudWatchMetrics": [{
                "Namespace": settings.namespace,
                "Dimensions": [["ServiceName"]],
                "Metrics": INTERVAL_COUNTS
                    .iter()
                    .map(|name| serde_json::json!({"Name": name, "Unit": "Count"}))
                    .collect::<Vec<_>>(),
            }],
        },
        "ServiceName": settings.service_name,
    });
    for (name, n) in INTERVAL_COUNTS.iter().zip(counts) {
        line[*name] = n.into();
    }
    line.to_string()
}

/// One EMF line per ended call: `Calls` by `Ending` (the record's cause) and, when agent
/// audio was played, `FirstAudioMs` (start to the first agent audio written).
pub fn call_line(
    settings: &Emf,
    ending: &str,
    first_audio_ms: Option<u64>,
    timestamp_ms: u128,
) -> String {
    let mut directives = vec![serde_json::json!({
        "Namespace": settings.namespace,
        "Dimensions": [["ServiceName", "Ending"]],
        "Metrics": [{"Name": "Calls", "Unit": "Count"}],
    })];
    if first_audio_ms.is_some() {
        directives.push(serde_json::json!({
            "Namespace": settings.namespace,
            "Dimensions": [["ServiceName"]],
            "Metrics": [{"Name": "FirstAudioMs", "Unit": "Milliseconds"}],
        }));
    }
    let mut line = serde_json::json!({
        "_aws": {"Timestamp": timestamp_ms as u64, "CloudWatchMetrics": directives},
        "ServiceName": settings.service_name,
        "Ending": ending,
        "Calls": 1,
    });
    if let Some(ms) = first_audio_ms {
        line["FirstAudioMs"] = ms.into();
    }
    line.to_string()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Prints `line` on stdout (stdout gone means nothing can be reported; calls go on).
pub fn print(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Prints the EMF lines every interval: active calls (idle tasks report 0, so the per-task
/// average is right) and the interval's counts from `totals` (running totals).
pub async fn publish_emf(
    settings: Emf,
    active: watch::Receiver<i64>,
    totals: impl Fn() -> [u64; 3],
) {
    let mut tick = tokio::time::interval(settings.interval);
    let mut last = totals();
    loop {
        tick.tick().await;
        let now = now_ms();
        print(&emf_line(&settings, *active.borrow(), now));
        let current = totals();
        let counts = std::array::from_fn(|i| current[i].saturating_sub(last[i]));
        last = current;
        print(&interval_line(&settings, counts, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_line_has_the_documented_structure() {
        let s = Emf {
            interval: Duration::from_secs(10),
            namespace: "MediaOrchestrator".into(),
            service_name: "media-ws-prod".into(),
        };
        let v: serde_json::Value =
            serde_json::from_str(&emf_line(&s, 7, 1_700_000_000_123)).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_123u64);
        let m = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], "MediaOrchestrator");
        assert_eq!(m["Dimensions"], serde_json::json!([["ServiceName"]]));
        assert_eq!(m["Metrics"][0]["Name"], "ActiveCalls");
        assert_eq!(m["Metrics"][0]["Unit"], "Count");
        assert_eq!(v["ServiceName"], "media-ws-prod");
        assert_eq!(v["ActiveCalls"], 7);
    }

    #[test]
    fn call_and_interval_lines_declare_what_they_carry() {
        let s = Emf {
            interval: Duration::from_secs(10),
            namespace: "MediaOrchestrator".into(),
            service_name: "media-ws-prod".into(),
        };
        let v: serde_json::Value =
            serde_json::from_str(&call_line(&s, "agent_dead", Some(840), 1)).unwrap();
        let d = &v["_aws"]["CloudWatchMetrics"];
        assert_eq!(
            d[0]["Dimensions"],
            serde_json::json!([["ServiceName", "Ending"]])
        );
        assert_eq!(d[0]["Metrics"][0]["Name"], "Calls");
        assert_eq!(d[1]["Metrics"][0]["Name"], "FirstAudioMs");
        assert_eq!(
            (v["Ending"].as_str(), v["Calls"].as_u64()),
            (Some("agent_dead"), Some(1))
        );
        assert_eq!(v["FirstAudioMs"], 840);
        // No agent audio: no FirstAudioMs, and no directive naming it.
        let v: serde_json::Value =
            serde_json::from_str(&call_line(&s, "caller_hangup", None, 1)).unwrap();
        assert_eq!(v["_aws"]["CloudWatchMetrics"].as_array().unwrap().len(), 1);
        assert!(v.get("FirstAudioMs").is_none());
        let v: serde_json::Value = serde_json::from_str(&interval_line(&s, [3, 0, 1], 1)).unwrap();
        assert_eq!(v["HandshakeRejections"], 3);
        assert_eq!(v["RegistryErrors"], 0);
        assert_eq!(v["TwilioRestErrors"], 1);
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn protection_bodies() {
        assert_eq!(
            protection_body(true, 60),
            r#"{"ProtectionEnabled":true,"ExpiresInMinutes":60}"#
        );
        assert_eq!(protection_body(false, 60), r#"{"ProtectionEnabled":false}"#);
    }
}
