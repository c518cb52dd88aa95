//! Harness for `media-lambda`: a Lambda Runtime API on loopback that hands out events and
//! collects responses, the real binary running against it, and moto's SSM server.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod moto;
pub mod runtime_api;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[allow(unused_imports)] // not every test binary starts moto
pub use moto::Moto;
pub use runtime_api::RuntimeApi;

/// The documented test Twilio Auth Token the `events/twiml*.json` signatures are made with.
pub const TEST_AUTH_TOKEN: &str = "test-auth-token-0123456789abcdef";
/// The bearer key in `events/token.json`.
pub const TEST_MINT_API_KEY: &str = "test-mint-api-key";
pub const CALL_SID: &str = "CAfedcba9876543210fedcba9876543210";
pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
/// The URL the `events/twiml.json` request was made to.
pub const EVENT_URL: &str = "https://abc123defg.execute-api.us-east-1.amazonaws.com/twiml";

/// An `events/<name>.json` file.
pub fn event(name: &str) -> Value {
    let path = format!("{}/events/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Replaces the webhook event's form body (base64, as API Gateway sends it) and signs it for
/// `url` with `token`, as Twilio would.
pub fn sign_form(event: &mut Value, fields: &[(&str, &str)], url: &str, token: &str) {
    use media_orchestrator::twilio::signature::{compute_signature, SignatureAlgorithm};
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let params: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    event["headers"]["content-length"] = body.len().to_string().into();
    event["body"] = base64::engine::general_purpose::STANDARD
        .encode(body)
        .into();
    event["isBase64Encoded"] = true.into();
    event["headers"]["x-twilio-signature"] =
        compute_signature(token.as_bytes(), SignatureAlgorithm::HmacSha1, url, &params).into();
}

/// The API Gateway event (HTTP API, payload 2.0) of Twilio's POST to `url` (absolute, query
/// included): its host, path and raw query; the caller adds the body and signature (e.g.
/// with [`sign_form`]).
pub fn twilio_post(url: &str) -> Value {
    let rest = url.strip_prefix("https://").expect("an https:// URL");
    let (host, path_query) = rest.split_once('/').expect("a path");
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    let path = format!("/{path}");
    let mut e = event("calls-answer");
    e["headers"]["host"] = host.into();
    e["requestContext"]["domainName"] = host.into();
    e["rawPath"] = path.clone().into();
    e["requestContext"]["http"]["path"] = path.clone().into();
    e["routeKey"] = format!("POST {path}").into();
    e["requestContext"]["routeKey"] = format!("POST {path}").into();
    e["rawQueryString"] = query.into();
    e
}

/// Environment every test process gets for AWS: fake credentials, moto's endpoint, no IMDS.
pub fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A running `media-lambda` process attached to a [`RuntimeApi`].
pub struct LambdaProcess {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl LambdaProcess {
    /// Starts the debug binary with `env` on top of the Lambda environment variables.
    pub fn start(api: &RuntimeApi, env: &[(String, String)]) -> Self {
        Self::start_bin(env!("CARGO_BIN_EXE_media-lambda"), api, env)
    }

    /// Starts `bin` (e.g. the release build) with the Lambda environment and `env`.
    pub fn start_bin(bin: &str, api: &RuntimeApi, env: &[(String, String)]) -> Self {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", api.host_port())
            .env("AWS_LAMBDA_FUNCTION_NAME", "media-lambda-test")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env(
                "AWS_LAMBDA_LOG_STREAM_NAME",
                "2026/11/24/[$LATEST]0123456789abcdef",
            )
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/media-lambda-test")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn media-lambda");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&logs);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let sink = Arc::clone(&logs);
        let err_sink = Arc::clone(&stderr_lines);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                err_sink.lock().unwrap().push(line.clone());
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            logs,
            stderr: stderr_lines,
        }
    }

    /// Everything the process wrote so far (stdout and stderr).
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits for the process to exit; its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .expect("media-lambda did not exit in time")
            .unwrap();
        // Let the log readers drain the pipes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        status.code()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// The API Gateway (payload 2.0) response the function posted, decoded.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: serde_json::Map<String, Value>,
    pub body: String,
}

impl HttpResponse {
    /// Parses the function's response document.
    pub fn parse(raw: &[u8]) -> Self {
        let v: Value = serde_json::from_slice(raw).unwrap();
        let body = v["body"].as_str().unwrap_or_default();
        let body = if v["isBase64Encoded"] == true {
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .unwrap(),
            )
            .unwrap()
        } else {
            body.to_string()
        };
        Self {
            status: u16::try_from(v["statusCode"].as_u64().unwrap()).unwrap(),
            headers: v["headers"].as_object().cloned().unwrap_or_default(),
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(Value::as_str)
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}
