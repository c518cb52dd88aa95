//! Harness for `media-lambda`: a Lambda Runtime API on loopback that hands out events and
//! collects responses, the real binary running against it, an API Gateway front, and moto's
//! SSM and DynamoDB server.

pub mod api_gateway;
pub mod moto;
pub mod process;
pub mod runtime_api;

use base64::Engine as _;
use serde_json::Value;

pub use moto::Moto;
pub use process::LambdaProcess;
pub use runtime_api::{HttpResponse, RuntimeApi};

/// The documented test Twilio Auth Token the `events/twiml*.json` signatures are made with.
pub const TEST_AUTH_TOKEN: &str = "test-auth-token-0123456789abcdef";
/// The bearer key in `events/token.json`.
pub const TEST_MINT_API_KEY: &str = "test-mint-api-key";
/// The bearer key in `events/calls.json` (`CALLS_API_KEY`, `POST /calls` only).
pub const TEST_CALLS_API_KEY: &str = "test-calls-api-key";
pub const CALL_SID: &str = "CAfedcba9876543210fedcba9876543210";
pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
/// The URL the `events/twiml.json` request was made to.
pub const EVENT_URL: &str = "https://abc123defg.execute-api.us-east-1.amazonaws.com/twiml";

/// The repository root (this crate lives in crates/test-support).
fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An `events/<name>.json` file.
pub fn event(name: &str) -> Value {
    let path = repo_root().join("events").join(format!("{name}.json"));
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
