//! A loopback Twilio REST API for creating and updating calls, as strict as Twilio: Basic auth
//! with the account SID and Auth Token, form-encoded, only documented fields, Twilio's limits
//! and error codes. Records each accepted request with its arrival time, or answers with a Twilio
//! error when told; `media-sim call --twilio-rest-listen` and the tests use it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Fields Twilio accepts on a call update.
const UPDATE_FIELDS: &[&str] = &[
    "Status",
    "Twiml",
    "Url",
    "Method",
    "FallbackUrl",
    "FallbackMethod",
    "StatusCallback",
    "StatusCallbackMethod",
    "TimeLimit",
];

/// Fields Twilio accepts when creating a call.
const CREATE_FIELDS: &[&str] = &[
    "To",
    "From",
    "Url",
    "Twiml",
    "ApplicationSid",
    "Method",
    "FallbackUrl",
    "FallbackMethod",
    "StatusCallback",
    "StatusCallbackMethod",
    "StatusCallbackEvent",
    "Timeout",
    "TimeLimit",
    "SendDigits",
    "Record",
    "CallerId",
    "MachineDetection",
    "MachineDetectionTimeout",
    "MachineDetectionSpeechThreshold",
    "MachineDetectionSpeechEndThreshold",
    "MachineDetectionSilenceTimeout",
    "AsyncAmd",
    "AsyncAmdStatusCallback",
    "AsyncAmdStatusCallbackMethod",
];

/// One accepted request.
#[derive(Debug, Clone)]
pub struct RestRequest {
    /// When it arrived.
    pub at: Instant,
    /// The CallSid in the path, or the one a create assigned.
    pub call_sid: String,
    /// A create (`Calls.json`) rather than an update of a live call.
    pub created: bool,
    /// The form fields, in order.
    pub form: Vec<(String, String)>,
}

impl RestRequest {
    /// The value of form field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        form_field(&self.form, name)
    }

    /// What the request does, for a timeline: `hang-up` or `transfer to +1…`.
    pub fn describe(&self) -> String {
        if self.created {
            return "outbound call created".to_string();
        }
        if let Some(status) = self.field("Status") {
            return format!("hang-up requested (Status={status})");
        }
        let Some(twiml) = self.field("Twiml") else {
            return "call update requested".to_string();
        };
        if let Some(number) = twiml
            .split("<Number>")
            .nth(1)
            .and_then(|rest| rest.split("</Number>").next())
        {
            return format!("transfer to {number} requested");
        }
        match twiml
            .split("<Say>")
            .nth(1)
            .and_then(|rest| rest.split("</Say>").next())
        {
            Some(said) => format!(
                "voicemail requested: <Say> ({} characters) then <Hangup />",
                said.chars().count()
            ),
            None => format!(
                "call redirected to new TwiML ({} characters)",
                twiml.chars().count()
            ),
        }
    }
}

#[derive(Default)]
struct Shared {
    requests: Vec<RestRequest>,
    /// Well-formed requests answered with the failure the test asked for.
    refused: Vec<RestRequest>,
    /// Answer the next requests with (HTTP status, Twilio code).
    fail_with: Option<(u16, u32)>,
    /// How long each answer takes (a slow Twilio).
    latency: std::time::Duration,
}

/// A running fake Twilio REST API.
pub struct FakeTwilioRest {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTwilioRest {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeTwilioRest {
    /// Listens on `addr` (port 0: any) for `account_sid` authenticated by `auth_token`.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start(addr: &str, account_sid: &str, auth_token: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let expected_auth = format!(
            "Basic {}",
            STANDARD.encode(format!("{account_sid}:{auth_token}"))
        );
        let prefix = format!("/2010-04-01/Accounts/{account_sid}/Calls");
        let s = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = Arc::clone(&s);
                let (auth, prefix) = (expected_auth.clone(), prefix.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (shared, auth, prefix) =
                            (Arc::clone(&shared), auth.clone(), prefix.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                handle(req, &shared, &auth, &prefix).await,
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// `http://ADDR` (what `TWILIO_API_BASE` points at).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests accepted so far.
    pub fn requests(&self) -> Vec<RestRequest> {
        self.lock().requests.clone()
    }

    /// The well-formed requests refused with [`FakeTwilioRest::fail_with`]'s failure.
    pub fn refused(&self) -> Vec<RestRequest> {
        self.lock().refused.clone()
    }

    /// From now on, answer with this HTTP status and Twilio code (`None`: succeed).
    pub fn fail_with(&self, failure: Option<(u16, u32)>) {
        self.lock().fail_with = failure;
    }

    /// From now on, take this long to answer each request.
    pub fn answer_after(&self, latency: std::time::Duration) {
        self.lock().latency = latency;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn form_field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Twilio's answer to a field the resource does not have.
fn unknown_field(form: &[(String, String)], known: &[&str]) -> Option<Response<Full<Bytes>>> {
    form.iter()
        .find(|(k, _)| !known.contains(&k.as_str()))
        .map(|(k, _)| twilio_error(400, 20001, &format!("Unknown parameter {k}")))
}

fn twilio_error(status: u16, code: u32, message: &str) -> Response<Full<Bytes>> {
    let body = json!({"code": code, "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status});
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    r
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    shared: &Mutex<Shared>,
    expected_auth: &str,
    prefix: &str,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(expected_auth);
    let form_encoded = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let post = req.method() == hyper::Method::POST;
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return twilio_error(400, 20001, "unreadable body");
    };
    let latency = shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if !authorized {
        return twilio_error(401, 20003, "Authenticate");
    }
    let target = match path.strip_prefix(prefix) {
        Some(".json") => Some(None),
        Some(rest) => rest
            .strip_prefix('/')
            .and_then(|rest| rest.strip_suffix(".json"))
            .filter(|sid| media_orchestrator::twilio::rest::is_call_sid(sid))
            .map(Some),
        None => None,
    };
    let (Some(target), true) = (target, post) else {
        return twilio_error(404, 20404, "The requested resource was not found");
    };
    if !form_encoded {
        return twilio_error(
            400,
            20001,
            "Content-Type must be application/x-www-form-urlencoded",
        );
    }
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let Some(call_sid) = target else {
        return create(shared, form);
    };
    let field = |name: &str| form_field(&form, name);
    if let Some(refusal) = unknown_field(&form, UPDATE_FIELDS) {
        return refusal;
    }
    if let Some(status) = field("Status") {
        if status != "completed" && status != "canceled" {
            return twilio_error(400, 20001, "Status must be completed or canceled");
        }
    }
    if field("Twiml").is_some() && field("Url").is_some() {
        return twilio_error(400, 20001, "Twiml and Url are mutually exclusive");
    }
    if field("Twiml").is_some_and(|t| t.chars().count() > 4000) {
        return twilio_error(
            400,
            32018,
            "Twiml size exceeded maximum allowed value of 4000 characters",
        );
    }
    if form.is_empty() {
        return twilio_error(400, 20001, "Nothing to update");
    }
    let status = if field("Status").is_some() {
        "completed"
    } else {
        "in-progress"
    };
    let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
    let request = RestRequest {
        at: Instant::now(),
        call_sid: call_sid.to_string(),
        created: false,
        form,
    };
    if let Some((status, code)) = s.fail_with {
        s.refused.push(request);
        return twilio_error(status, code, "failure requested by the test");
    }
    s.requests.push(request);
    let body = json!({"sid": call_sid, "status": status});
    Response::new(Full::new(Bytes::from(body.to_string())))
}

/// `POST …/Calls.json`.
fn create(shared: &Mutex<Shared>, form: Vec<(String, String)>) -> Response<Full<Bytes>> {
    let field = |name: &str| form_field(&form, name);
    if let Some(refusal) = unknown_field(&form, CREATE_FIELDS) {
        return refusal;
    }
    let e164 = media_orchestrator::twilio::number::is_e164;
    match (field("To"), field("From")) {
        (None, _) => return twilio_error(400, 21201, "No 'To' number is specified"),
        (_, None) => return twilio_error(400, 21213, "No 'From' number is specified"),
        (Some(to), _) if !e164(to) => {
            return twilio_error(400, 21211, &format!("Invalid 'To' Phone Number: {to}"))
        }
        (_, Some(from)) if !e164(from) => {
            return twilio_error(400, 21212, &format!("Invalid From Number: {from}"))
        }
        _ => {}
    }
    if ["Url", "Twiml", "ApplicationSid"]
        .iter()
        .all(|k| field(k).is_none())
    {
        return twilio_error(400, 21205, "Url parameter is required");
    }
    for name in [
        "Url",
        "FallbackUrl",
        "StatusCallback",
        "AsyncAmdStatusCallback",
    ] {
        if let Some(url) = field(name) {
            let absolute = ["https://", "http://"].iter().any(|s| {
                url.strip_prefix(s)
                    .is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
            });
            if !absolute || url.chars().count() > 4000 || url.contains(' ') {
                return twilio_error(400, 21205, &format!("{name} is not a valid URL"));
            }
        }
    }
    for name in [
        "Method",
        "FallbackMethod",
        "StatusCallbackMethod",
        "AsyncAmdStatusCallbackMethod",
    ] {
        if field(name).is_some_and(|m| m != "GET" && m != "POST") {
            return twilio_error(400, 20001, &format!("{name} must be GET or POST"));
        }
    }
    let amd = field("MachineDetection");
    if amd.is_some_and(|m| m != "Enable" && m != "DetectMessageEnd") {
        return twilio_error(
            400,
            20001,
            "MachineDetection must be Enable or DetectMessageEnd",
        );
    }
    if field("AsyncAmd").is_some_and(|a| a != "true" && a != "false") {
        return twilio_error(400, 20001, "AsyncAmd must be true or false");
    }
    if amd.is_none() && (field("AsyncAmd").is_some() || field("AsyncAmdStatusCallback").is_some()) {
        return twilio_error(400, 21263, "AsyncAmd parameters need MachineDetection");
    }
    if field("Twiml").is_some_and(|t| t.chars().count() > 4000) {
        return twilio_error(
            400,
            32018,
            "Twiml size exceeded maximum allowed value of 4000 characters",
        );
    }
    let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((status, code)) = s.fail_with {
        return twilio_error(status, code, "failure requested by the test");
    }
    let call_sid = format!("CA{}", uuid::Uuid::new_v4().simple());
    s.requests.push(RestRequest {
        at: Instant::now(),
        call_sid: call_sid.clone(),
        created: true,
        form,
    });
    let body = json!({"sid": call_sid, "status": "queued", "direction": "outbound-api",
        "answered_by": null, "queue_time": "1000"});
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::CREATED;
    r
}
