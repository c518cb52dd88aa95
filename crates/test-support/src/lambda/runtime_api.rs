//! A Lambda Runtime API (2018-06-01) on 127.0.0.1:0: `GET …/invocation/next` long-polls for
//! the next queued event, `POST …/invocation/{id}/response|error` completes it, and
//! `POST …/init/error` records a failed start. Times are recorded for the cold-start bench.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use base64::Engine as _;

/// How an invocation ended.
#[derive(Debug)]
pub enum Outcome {
    /// `…/response` with this body.
    Response(Vec<u8>),
    /// `…/error` with this body.
    Error(Vec<u8>),
}

/// A finished invocation.
#[derive(Debug)]
pub struct Invocation {
    pub outcome: Outcome,
    /// When the event was handed out by `/next`.
    pub handed_out: Instant,
    /// When the response (or error) arrived.
    pub completed: Instant,
}

impl Invocation {
    /// The HTTP response the function answered with; panics on an invocation error.
    pub fn http(&self) -> HttpResponse {
        match &self.outcome {
            Outcome::Response(raw) => HttpResponse::parse(raw),
            Outcome::Error(raw) => panic!("invocation failed: {}", String::from_utf8_lossy(raw)),
        }
    }

    /// Event handed out → response received.
    pub fn latency(&self) -> Duration {
        self.completed - self.handed_out
    }
}

struct Queued {
    id: String,
    event: Vec<u8>,
}

struct Shared {
    queue: tokio::sync::Mutex<mpsc::Receiver<Queued>>,
    pending: Mutex<HashMap<String, (Instant, oneshot::Sender<Invocation>)>>,
    handed_out: Mutex<HashMap<String, Instant>>,
    first_next: Mutex<Option<Instant>>,
    init_error: Mutex<Option<String>>,
}

/// The Runtime API server; stops when dropped.
pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Queued>,
    next_id: Mutex<u64>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RuntimeApi {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            queue: tokio::sync::Mutex::new(rx),
            pending: Mutex::new(HashMap::new()),
            handed_out: Mutex::new(HashMap::new()),
            first_next: Mutex::new(None),
            init_error: Mutex::new(None),
        });
        let state = Arc::clone(&shared);
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(route(req, &state).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            shared,
            tx,
            next_id: Mutex::new(0),
            server,
        }
    }

    /// `127.0.0.1:<port>`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// When the function first asked for an event (it is initialized and ready).
    pub fn first_next(&self) -> Option<Instant> {
        *self.shared.first_next.lock().unwrap()
    }

    /// Waits until the function asks for its first event.
    pub async fn wait_ready(&self, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            if let Some(t) = self.first_next() {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "function never asked for an event"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The body of `/runtime/init/error`, if the function reported one.
    pub fn init_error(&self) -> Option<String> {
        self.shared.init_error.lock().unwrap().clone()
    }

    /// Queues `event` and waits for the function's answer.
    pub async fn invoke(&self, event: &Value) -> Invocation {
        let id = {
            let mut n = self.next_id.lock().unwrap();
            *n += 1;
            format!("8476a536-e9f4-11e8-9739-{:012}", *n)
        };
        let (done_tx, done_rx) = oneshot::channel();
        self.shared
            .pending
            .lock()
            .unwrap()
            .insert(id.clone(), (Instant::now(), done_tx));
        self.tx
            .send(Queued {
                id,
                event: serde_json::to_vec(event).unwrap(),
            })
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(30), done_rx)
            .await
            .expect("no response from the function in time")
            .expect("runtime api dropped the invocation")
    }

    /// Shorthand: invoke and decode the HTTP response.
    pub async fn call(&self, event: &Value) -> HttpResponse {
        self.invoke(event).await.http()
    }
}

async fn route(req: Request<Incoming>, state: &Shared) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let rest = path
        .strip_prefix("/2018-06-01/runtime/")
        .unwrap_or_default();
    if method == Method::GET && rest == "invocation/next" {
        state
            .first_next
            .lock()
            .unwrap()
            .get_or_insert_with(Instant::now);
        let next = state.queue.lock().await.recv().await;
        let Some(Queued { id, event }) = next else {
            return status(StatusCode::GONE);
        };
        let deadline = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            + 30_000;
        state
            .handed_out
            .lock()
            .unwrap()
            .insert(id.clone(), Instant::now());
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("lambda-runtime-aws-request-id", &id)
            .header("lambda-runtime-deadline-ms", deadline.to_string())
            .header(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:media-lambda-test",
            )
            .header(
                "lambda-runtime-trace-id",
                "Root=1-6744a1b0-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=0",
            )
            .body(Full::new(Bytes::from(event)))
            .unwrap();
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    if method == Method::POST && rest == "init/error" {
        *state.init_error.lock().unwrap() = Some(String::from_utf8_lossy(&body).into_owned());
        return status(StatusCode::ACCEPTED);
    }
    if method == Method::POST {
        if let Some((id, kind)) = rest
            .strip_prefix("invocation/")
            .and_then(|r| r.split_once('/'))
        {
            let completed = Instant::now();
            let handed_out = state.handed_out.lock().unwrap().remove(id);
            let pending = state.pending.lock().unwrap().remove(id);
            if let (Some(handed_out), Some((_, done))) = (handed_out, pending) {
                let outcome = match kind {
                    "response" => Outcome::Response(body),
                    "error" => Outcome::Error(body),
                    _ => return status(StatusCode::NOT_FOUND),
                };
                // The test may have stopped waiting; nothing to do then.
                let _ = done.send(Invocation {
                    outcome,
                    handed_out,
                    completed,
                });
                return status(StatusCode::ACCEPTED);
            }
            return status(StatusCode::BAD_REQUEST);
        }
    }
    status(StatusCode::NOT_FOUND)
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
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
