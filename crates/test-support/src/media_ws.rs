//! Test harness: runs the real `media-ws` binary on an ephemeral loopback port, captures its
//! log lines, and plays Twilio over a real WebSocket client.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const STREAM_SID: &str = "MZ5f1c7e0b9a2d4c3e8f6a1b2c3d4e5f60";
pub const CALL_SID: &str = "CAfedcba9876543210fedcba9876543210";
pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";

/// A running `media-ws` process.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `media-ws` with `env` on top of a quiet base environment (PORT=0, JSON logs).
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_bin(&media_ws_bin(), env).await
    }

    pub async fn start_bin(bin: &str, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", "0")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "debug")
            .env("AGENT", "none");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let mut addr_tx = Some(addr_tx);
        let (child, lines) = bins::spawn_collecting(&mut cmd, move |line| {
            if line.contains("\"listening\"") {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let addr: SocketAddr = v["addr"].as_str().unwrap().parse().unwrap();
                if let Some(tx) = addr_tx.take() {
                    let _ = tx.send(addr.port());
                }
            }
        });
        let logs = lines.all;
        let port = tokio::time::timeout(Duration::from_secs(20), addr_rx)
            .await
            .expect("server did not report its address")
            .expect("server exited before listening");
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            logs,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Every log line so far (stdout and stderr).
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        for _ in 0..200 {
            if self.logs().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("log never contained {needle:?}; logs:\n{}", self.logs());
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("server did not exit in time")
            .unwrap()
            .code()
    }

    /// `GET path` over a fresh connection: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_request(self.addr, "GET", path, &[]).await
    }

    /// The value of a metric line starting with `prefix` (e.g. `media_frames_total{direction="inbound"}`).
    pub async fn metric(&self, prefix: &str) -> f64 {
        let (_, body) = self.get("/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(prefix).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// Connects a WebSocket with extra headers.
    pub async fn connect(&self, path: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
        let mut req = self.url(path).into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
            Err(e) => panic!("connect failed: {e}"),
        }
    }
}

use crate::bins;

/// The `media-ws` binary (see [`bins::workspace_bin`]).
pub fn media_ws_bin() -> String {
    bins::workspace_bin("media-ws")
}

/// A loopback port that refuses connections for as long as it lives: bound, so nothing else
/// can take it, and never listening, so every connect gets a reset.
pub struct RefusedPort {
    _socket: tokio::net::TcpSocket,
    /// The port.
    pub port: u16,
}

/// A [`RefusedPort`] (race-free: the port stays ours).
pub fn refused_port() -> RefusedPort {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let port = socket.local_addr().unwrap().port();
    RefusedPort {
        _socket: socket,
        port,
    }
}

/// A loopback port for a *child process* to listen on, when the port must be known before
/// the child starts (it is handed to another process first). Held bound until this call
/// returns, so only the kernel's next ephemeral choice in the moment before the child binds
/// could race it; in-process servers bind port 0 themselves instead.
pub fn port_for_child() -> u16 {
    refused_port().port
}

/// A one-shot HTTP/1.1 request: (status, body).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    http_request_with_body(addr, method, path, headers, "").await
}

/// [`http_request`] with a body (`Content-Length` added when it is not empty).
pub async fn http_request_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn connected() -> Message {
    Message::text(json!({"event":"connected","protocol":"Call","version":"1.0.0"}).to_string())
}

pub fn start_with(call_sid: &str, params: serde_json::Value) -> Message {
    Message::text(
        json!({"event":"start","sequenceNumber":"1",
            "start":{"accountSid":ACCOUNT_SID,"streamSid":STREAM_SID,"callSid":call_sid,
                     "tracks":["inbound"],"customParameters":params,
                     "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},
            "streamSid":STREAM_SID})
        .to_string(),
    )
}

pub fn start() -> Message {
    start_with(CALL_SID, json!({}))
}

pub fn media(seq: u64, payload_b64: &str) -> Message {
    Message::text(
        json!({"event":"media","sequenceNumber":seq.to_string(),
            "media":{"track":"inbound","chunk":(seq-1).to_string(),"timestamp":(seq*20).to_string(),"payload":payload_b64},
            "streamSid":STREAM_SID})
        .to_string(),
    )
}

pub fn stop(seq: u64) -> Message {
    Message::text(
        json!({"event":"stop","sequenceNumber":seq.to_string(),
            "stop":{"accountSid":ACCOUNT_SID,"callSid":CALL_SID},"streamSid":STREAM_SID})
        .to_string(),
    )
}

/// 160 bytes of μ-law silence, base64.
pub const SILENCE_B64: &str = "/////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////////w==";

/// Reads until the server's close frame: (code, reason). Other messages are skipped.
pub async fn expect_close(ws: &mut Ws, within: Duration) -> (u16, String) {
    let fut = async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(Some(frame))) => {
                    return (u16::from(frame.code), frame.reason.to_string())
                }
                Ok(Message::Close(None)) => return (1005, String::new()),
                Ok(_) => {}
                Err(e) => panic!("socket error before close: {e}"),
            }
        }
        panic!("socket ended without a close frame")
    };
    tokio::time::timeout(within, fut)
        .await
        .expect("no close frame in time")
}

/// Plays Twilio on `ws` until the server closes: marks are echoed as they arrive (as if
/// their audio had played), everything else is read and dropped. The close is left for the
/// caller to answer (or not). Returns the close frame's (code, reason).
pub async fn echo_marks_until_close(ws: &mut Ws, within: Duration) -> Option<(u16, String)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the server closes in time")?
            .ok()?;
        match msg {
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v["event"] == "mark" {
                    let echo = json!({"event":"mark","streamSid":v["streamSid"],"mark":v["mark"]});
                    ws.send(Message::text(echo.to_string())).await.unwrap();
                }
            }
            Message::Close(frame) => {
                return frame.map(|f| (u16::from(f.code), f.reason.to_string()));
            }
            _ => {}
        }
    }
}

pub fn code(c: CloseCode) -> u16 {
    u16::from(c)
}

/// Plays connected → start → `frames` media → stop.
pub async fn play_call(ws: &mut Ws, frames: u64) {
    ws.send(connected()).await.unwrap();
    ws.send(start()).await.unwrap();
    for i in 0..frames {
        ws.send(media(i + 2, SILENCE_B64)).await.unwrap();
    }
    ws.send(stop(frames + 2)).await.unwrap();
}

pub mod fake_el;

/// What a simulated Twilio caller received from the server.
#[derive(Default, Debug, Clone)]
pub struct CallerLog {
    /// Every outbound media payload, decoded and concatenated.
    pub audio: Vec<u8>,
    pub media_messages: usize,
    /// Items in arrival order: "media", `"mark:<name>"`, "clear".
    pub items: Vec<String>,
    pub close: Option<(u16, String)>,
    pub ended: bool,
    /// Messages that were not exactly one of Twilio's three shapes.
    pub malformed: usize,
}

/// A simulated Twilio caller on a split socket: a reader task records what arrives (and
/// echoes marks back, as Twilio does), `send` writes.
pub struct Caller {
    tx: tokio::sync::mpsc::UnboundedSender<Message>,
    pub log: Arc<Mutex<CallerLog>>,
}

impl Caller {
    pub fn new(ws: Ws) -> Self {
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
        let log = Arc::new(Mutex::new(CallerLog::default()));
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        let l = Arc::clone(&log);
        let echo = tx.clone();
        tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                match msg {
                    Ok(Message::Text(t)) if t.as_str() == "pong" => {
                        l.lock().unwrap().items.push("pong".into());
                    }
                    Ok(Message::Text(t)) => {
                        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                        let mut log = l.lock().unwrap();
                        let keys: Vec<&str> =
                            v.as_object().unwrap().keys().map(String::as_str).collect();
                        match v["event"].as_str() {
                            Some("media") => {
                                let ok =
                                    keys.len() == 3 && v["media"].as_object().unwrap().len() == 1;
                                log.malformed += usize::from(!ok || v["streamSid"] != STREAM_SID);
                                let bytes = base64::Engine::decode(
                                    &base64::engine::general_purpose::STANDARD,
                                    v["media"]["payload"].as_str().unwrap(),
                                )
                                .unwrap();
                                log.audio.extend_from_slice(&bytes);
                                log.media_messages += 1;
                                log.items.push("media".into());
                            }
                            Some("mark") => {
                                log.malformed +=
                                    usize::from(keys.len() != 3 || v["streamSid"] != STREAM_SID);
                                let name = v["mark"]["name"].as_str().unwrap().to_string();
                                log.items.push(format!("mark:{name}"));
                                let _ = echo.send(Message::text(
                                    serde_json::json!({"event":"mark","sequenceNumber":"999","streamSid":STREAM_SID,"mark":{"name":name}}).to_string(),
                                ));
                            }
                            Some("clear") => {
                                log.malformed +=
                                    usize::from(keys.len() != 2 || v["streamSid"] != STREAM_SID);
                                log.items.push("clear".into());
                            }
                            _ => log.malformed += 1,
                        }
                    }
                    Ok(Message::Close(frame)) => {
                        let mut log = l.lock().unwrap();
                        log.close = Some(frame.map_or((1005, String::new()), |f| {
                            (u16::from(f.code), f.reason.to_string())
                        }));
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            l.lock().unwrap().ended = true;
        });
        Self { tx, log }
    }

    pub fn send(&self, msg: Message) {
        let _ = self.tx.send(msg);
    }

    pub fn snapshot(&self) -> CallerLog {
        self.log.lock().unwrap().clone()
    }

    pub async fn wait(&self, what: &str, pred: impl Fn(&CallerLog) -> bool) -> CallerLog {
        for _ in 0..400 {
            let snap = self.snapshot();
            if pred(&snap) {
                return snap;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("caller: timed out waiting for {what}: {:?}", {
            let s = self.snapshot();
            (s.media_messages, s.items.len(), s.close)
        });
    }

    /// Plays `audio` as 20 ms media frames starting at sequence number `seq`, paced by `gap`.
    pub async fn play(&self, audio: &[u8], seq: u64, gap: Duration) -> u64 {
        let mut seq = seq;
        for frame in audio.chunks(160) {
            let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, frame);
            self.send(media(seq, &b64));
            seq += 1;
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
        }
        seq
    }
}

/// μ-law bytes of a 440 Hz-ish tone, distinct per `seed`.
pub fn tone(seed: u8, frames: usize) -> Vec<u8> {
    (0..frames * 160)
        .map(|i| {
            let x = ((i as f64) * 2.0 * std::f64::consts::PI * (300.0 + 20.0 * f64::from(seed))
                / 8000.0)
                .sin();
            media_orchestrator::audio::mulaw::encode((x * 6000.0) as i16)
        })
        .collect()
}

/// A fake ECS agent endpoint recording the task-protection requests it receives.
pub async fn fake_ecs_agent() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String, serde_json::Value)>>>,
) {
    use http_body_util::BodyExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let record = std::sync::Arc::clone(&record);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let record = std::sync::Arc::clone(&record);
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let v: serde_json::Value =
                                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                            record.lock().unwrap().push((method, path, v));
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(
                                    r#"{"protection":{"ProtectionEnabled":true}}"#,
                                )),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}/v4/task-abc"), seen)
}
