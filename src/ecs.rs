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

/// Prints an EMF line every interval (idle tasks report 0, so the per-task average is right).
pub async fn publish_emf(settings: Emf, active: watch::Receiver<i64>) {
    let mut tick = tokio::time::interval(settings.interval);
    loop {
        tick.tick().await;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let line = emf_line(&settings, *active.borrow(), now);
        let mut out = std::io::stdout().lock();
        // Stdout gone means nothing can be reported; keep serving calls.
        let _ = writeln!(out, "{line}");
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
    fn protection_bodies() {
        assert_eq!(
            protection_body(true, 60),
            r#"{"ProtectionEnabled":true,"ExpiresInMinutes":60}"#
        );
        assert_eq!(protection_body(false, 60), r#"{"ProtectionEnabled":false}"#);
    }
}
