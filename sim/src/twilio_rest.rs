//! A loopback Twilio REST API for live calls, strict the way Twilio is: `POST
//! /2010-04-01/Accounts/{AC…}/Calls/{CA…}.json`, HTTP Basic with the account's SID and Auth
//! Token (401 + 20003 otherwise), form-encoded, only the documented update fields, `Status`
//! one of `completed`/`canceled`, `Twiml` and `Url` mutually exclusive, `Twiml` at most 4000
//! characters. Records every accepted request with its arrival time; can be told to answer
//! with a Twilio error instead. `media-sim call --twilio-rest-listen` and the tests use it.

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

/// One accepted request.
#[derive(Debug, Clone)]
pub struct RestRequest {
    /// When it arrived.
    pub at: Instant,
    /// The CallSid in the path.
    pub call_sid: String,
    /// The form fields, in order.
    pub form: Vec<(String, String)>,
}

impl RestRequest {
    /// The value of form field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// What the request does, for a timeline: `hang-up` or `transfer to +1…`.
    pub fn describe(&self) -> String {
        if let Some(status) = self.field("Status") {
            return format!("hang-up requested (Status={status})");
        }
        match self.field("Twiml") {
            Some(twiml) => {
                let number = twiml
                    .split("<Number>")
                    .nth(1)
                    .and_then(|rest| rest.split("</Number>").next())
                    .unwrap_or("?");
                format!("transfer to {number} requested")
            }
            None => "call update requested".to_string(),
        }
    }
}

#[derive(Default)]
struct Shared {
    requests: Vec<RestRequest>,
    /// Answer the next requests with (HTTP status, Twilio code).
    fail_with: Option<(u16, u32)>,
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
        let prefix = format!("/2010-04-01/Accounts/{account_sid}/Calls/");
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

    /// From now on, answer with this HTTP status and Twilio code (`None`: succeed).
    pub fn fail_with(&self, failure: Option<(u16, u32)>) {
        self.lock().fail_with = failure;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
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
    if !authorized {
        return twilio_error(401, 20003, "Authenticate");
    }
    let call_sid = path
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(".json"))
        .filter(|sid| media_orchestrator::twilio::rest::is_call_sid(sid));
    let (Some(call_sid), true) = (call_sid, post) else {
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
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some((k, _)) = form
        .iter()
        .find(|(k, _)| !UPDATE_FIELDS.contains(&k.as_str()))
    {
        return twilio_error(400, 20001, &format!("Unknown parameter {k}"));
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
    if let Some((status, code)) = s.fail_with {
        return twilio_error(status, code, "failure requested by the test");
    }
    s.requests.push(RestRequest {
        at: Instant::now(),
        call_sid: call_sid.to_string(),
        form,
    });
    let body = json!({"sid": call_sid, "status": status});
    Response::new(Full::new(Bytes::from(body.to_string())))
}
