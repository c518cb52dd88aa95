//! A fake ElevenLabs agent server: a real WebSocket server on loopback speaking the agent
//! protocol (signed-URL endpoint, initiation, metadata, audio, pings, interruptions), with
//! configurable formats and faults, recording everything it receives.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How the fake behaves.
#[derive(Clone, Debug)]
pub struct Behaviour {
    pub input_format: &'static str,
    pub output_format: &'static str,
    /// Echo each user audio chunk back as an `audio` event (same bytes, same format).
    pub echo: bool,
    /// Delay before the metadata is sent.
    pub metadata_delay: Duration,
    /// Stop reading the socket after the metadata (an agent slower than real time).
    pub stall_after_metadata: bool,
    /// API key the signed-URL endpoint requires.
    pub api_key: Option<&'static str>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            input_format: "ulaw_8000",
            output_format: "ulaw_8000",
            echo: true,
            metadata_delay: Duration::ZERO,
            stall_after_metadata: false,
            api_key: None,
        }
    }
}

/// What one conversation received.
#[derive(Default, Debug, Clone)]
pub struct Conversation {
    pub query: String,
    pub xi_api_key: Option<String>,
    pub init: Option<Value>,
    /// Decoded `user_audio_chunk` bytes, concatenated.
    pub audio: Vec<u8>,
    pub audio_messages: usize,
    /// Raw binary frames (legacy mode), concatenated.
    pub binary: Vec<u8>,
    pub pongs: Vec<u64>,
    /// Other client messages (tool results, user messages, …), with when they arrived.
    pub messages: Vec<(tokio::time::Instant, Value)>,
    pub close_code: Option<u16>,
    pub ended: bool,
}

#[derive(Default)]
struct Shared {
    conversations: Vec<Conversation>,
    controls: Vec<mpsc::UnboundedSender<Message>>,
    signed_url_requests: usize,
}

/// A running fake agent server.
pub struct FakeEl {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeEl {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeEl {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = if behaviour.stall_after_metadata {
            // A stalled agent stops reading; a small receive buffer makes the kernel push
            // back after kilobytes, not megabytes, as a real peer's full window would.
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            socket.listen(16).unwrap()
        } else {
            TcpListener::bind("127.0.0.1:0").await.unwrap()
        };
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = Arc::clone(&s);
                let behaviour = behaviour.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        let behaviour = behaviour.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(handle(req, shared, behaviour, addr))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self { addr, shared, task }
    }

    /// The conversation URL (what `ELEVENLABS_WS_URL` points at).
    pub fn ws_url(&self) -> String {
        format!(
            "ws://{}/v1/convai/conversation?agent_id=agent_test",
            self.addr
        )
    }

    /// The REST base (what `ELEVENLABS_API_BASE` points at).
    pub fn api_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn conversations(&self) -> Vec<Conversation> {
        self.shared.lock().unwrap().conversations.clone()
    }

    pub fn conversation(&self, i: usize) -> Conversation {
        self.conversations()[i].clone()
    }

    pub fn signed_url_requests(&self) -> usize {
        self.shared.lock().unwrap().signed_url_requests
    }

    /// Sends a raw message on conversation `i`.
    pub fn send(&self, i: usize, msg: Message) {
        self.shared.lock().unwrap().controls[i].send(msg).unwrap();
    }

    pub fn send_json(&self, i: usize, v: Value) {
        self.send(i, Message::text(v.to_string()));
    }

    /// Sends agent audio (raw bytes in the output format) with an event id.
    pub fn send_audio(&self, i: usize, raw: &[u8], event_id: u64) {
        self.send_json(
            i,
            json!({"type":"audio","audio_event":{"audio_base_64":STANDARD.encode(raw),"event_id":event_id}}),
        );
    }

    pub fn close(&self, i: usize, code: u16) {
        self.send(
            i,
            Message::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "bye".into(),
            })),
        );
    }

    /// Waits until `pred` holds for the recorded conversations.
    pub async fn wait(&self, what: &str, pred: impl Fn(&[Conversation]) -> bool) {
        for _ in 0..400 {
            if pred(&self.conversations()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "fake agent: timed out waiting for {what}: {:?}",
            self.conversations().len()
        );
    }
}

fn handle(
    req: Request<hyper::body::Incoming>,
    shared: Arc<Mutex<Shared>>,
    behaviour: Behaviour,
    addr: SocketAddr,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let respond = |status: StatusCode, body: Value| {
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        *r.status_mut() = status;
        r
    };
    if path == "/v1/convai/conversation/get-signed-url" {
        shared.lock().unwrap().signed_url_requests += 1;
        let key = req
            .headers()
            .get("xi-api-key")
            .and_then(|v| v.to_str().ok());
        if behaviour.api_key.is_some() && key != behaviour.api_key {
            return respond(StatusCode::UNAUTHORIZED, json!({"detail":"bad key"}));
        }
        if !query.contains("agent_id=") {
            return respond(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"detail":"agent_id"}),
            );
        }
        return respond(
            StatusCode::OK,
            json!({"signed_url": format!("ws://{addr}/v1/convai/conversation?agent_id=agent_test&conversation_signature=sig123")}),
        );
    }
    if path != "/v1/convai/conversation" {
        return respond(StatusCode::NOT_FOUND, json!({}));
    }
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return respond(StatusCode::BAD_REQUEST, json!({}));
    };
    let xi_api_key = req
        .headers()
        .get("xi-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (tx, rx) = mpsc::unbounded_channel();
    let index = {
        let mut s = shared.lock().unwrap();
        s.conversations.push(Conversation {
            query,
            xi_api_key,
            ..Conversation::default()
        });
        s.controls.push(tx);
        s.conversations.len() - 1
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        converse(ws, index, shared, behaviour, rx).await;
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut()
        .insert("connection", "Upgrade".parse().unwrap());
    r.headers_mut()
        .insert("upgrade", "websocket".parse().unwrap());
    r.headers_mut().insert(
        "sec-websocket-accept",
        derive_accept_key(key.as_bytes()).parse().unwrap(),
    );
    r
}

async fn converse(
    ws: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    index: usize,
    shared: Arc<Mutex<Shared>>,
    behaviour: Behaviour,
    mut control: mpsc::UnboundedReceiver<Message>,
) {
    let (mut sink, mut stream) = ws.split();
    let record = |f: &dyn Fn(&mut Conversation)| {
        let mut s = shared.lock().unwrap();
        f(&mut s.conversations[index]);
    };
    let metadata = json!({"type":"conversation_initiation_metadata",
        "conversation_initiation_metadata_event":{"conversation_id":format!("conv_{index}"),
        "agent_output_audio_format":behaviour.output_format,
        "user_input_audio_format":behaviour.input_format}})
    .to_string();
    let metadata_at = tokio::time::Instant::now() + behaviour.metadata_delay;
    let mut metadata_sent = false;
    let mut event_id = 0u64;
    let mut init_received = false;
    loop {
        let stalled = behaviour.stall_after_metadata && metadata_sent && init_received;
        tokio::select! {
            () = tokio::time::sleep_until(metadata_at), if !metadata_sent => {
                metadata_sent = true;
                if sink.send(Message::text(metadata.clone())).await.is_err() { break; }
            }
            msg = control.recv() => match msg {
                Some(m) => {
                    let closing = m.is_close();
                    if sink.send(m).await.is_err() || closing { break; }
                }
                None => break,
            },
            msg = stream.next(), if !stalled => match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if let Some(chunk) = v.get("user_audio_chunk").and_then(Value::as_str) {
                        let bytes = STANDARD.decode(chunk).unwrap();
                        record(&|c| { c.audio.extend_from_slice(&bytes); c.audio_messages += 1; });
                        if behaviour.echo {
                            event_id += 1;
                            let reply = json!({"type":"audio","audio_event":{"audio_base_64":chunk,"event_id":event_id}});
                            if sink.send(Message::text(reply.to_string())).await.is_err() { break; }
                        }
                    } else if v["type"] == "conversation_initiation_client_data" {
                        init_received = true;
                        record(&|c| c.init = Some(v.clone()));
                    } else if v["type"] == "pong" {
                        let id = v["event_id"].as_u64().unwrap();
                        record(&|c| c.pongs.push(id));
                    } else {
                        let at = tokio::time::Instant::now();
                        record(&|c| c.messages.push((at, v.clone())));
                    }
                }
                Some(Ok(Message::Binary(b))) => record(&|c| c.binary.extend_from_slice(&b)),
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map(|f| u16::from(f.code));
                    record(&|c| c.close_code = code);
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    record(&|c| c.ended = true);
}
