//! One WebSocket of a call, owned by the call's task: messages go straight to the socket when
//! it can take them, into a small byte-bounded queue when it cannot, and the same poll that
//! reads also writes and flushes — no writer task, no lock, no channel. Audio is dropped
//! above the byte limit (the caller counts it); control messages never are. Text is rendered
//! into one reused buffer whose allocation comes back once the socket has written it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{Sink, Stream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

/// A WebSocket as the call loop needs it: a stream of messages and a sink for them.
pub trait Socket:
    Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send
{
}

impl<S> Socket for S where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send
{
}

/// A call's side of one socket.
pub struct Conn<S> {
    ws: S,
    queue: VecDeque<Message>,
    queued_bytes: usize,
    /// Handed to the socket but not yet flushed (a buffering socket holds it).
    in_flight: usize,
    limit: usize,
    unflushed: bool,
    over_since: Option<Instant>,
    failed: Option<WsError>,
    buf: BytesMut,
}

impl<S> std::fmt::Debug for Conn<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("queued_bytes", &self.queued_bytes)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl<S: Socket> Conn<S> {
    /// Wraps `ws`; droppable messages are refused while more than `limit` bytes wait.
    pub fn new(ws: S, limit: usize) -> Self {
        Self {
            ws,
            queue: VecDeque::new(),
            queued_bytes: 0,
            in_flight: 0,
            limit,
            unflushed: false,
            over_since: None,
            failed: None,
            buf: BytesMut::new(),
        }
    }

    /// Sends `text`; `droppable` (audio) is refused, returning `false`, while the socket is
    /// behind by more than the limit.
    pub fn send_text(&mut self, text: &str, droppable: bool) -> bool {
        if droppable && self.backlog() > self.limit {
            return false;
        }
        self.buf.reserve(text.len());
        self.buf.extend_from_slice(text.as_bytes());
        let bytes = self.buf.split().freeze();
        // The bytes were a `&str`: always UTF-8.
        let Ok(utf8) = Utf8Bytes::try_from(bytes) else {
            return false;
        };
        self.send(Message::Text(utf8));
        true
    }

    /// Sends `data` as a binary frame (see [`Conn::send_text`] for `droppable`).
    pub fn send_binary(&mut self, data: &[u8], droppable: bool) -> bool {
        if droppable && self.backlog() > self.limit {
            return false;
        }
        self.buf.reserve(data.len());
        self.buf.extend_from_slice(data);
        let bytes = self.buf.split().freeze();
        self.send(Message::Binary(bytes));
        true
    }

    /// Sends a WebSocket ping.
    pub fn ping(&mut self) {
        self.send(Message::Ping(Bytes::from_static(b"ka")));
    }

    /// Queues `msg` and writes what the socket takes now.
    pub fn send(&mut self, msg: Message) {
        self.queued_bytes += msg.len();
        self.queue.push_back(msg);
        self.note_backlog();
        let waker = futures_util::task::noop_waker_ref();
        let mut cx = Context::from_waker(waker);
        // Pending only means the socket is full; the loop's next poll carries on.
        let _ = self.poll_write(&mut cx);
    }

    /// Bytes sent and not yet flushed to the peer.
    pub fn backlog(&self) -> usize {
        self.queued_bytes + self.in_flight
    }

    /// Starts or stops the over-the-limit clock.
    fn note_backlog(&mut self) {
        if self.backlog() > self.limit {
            self.over_since.get_or_insert_with(Instant::now);
        } else {
            self.over_since = None;
        }
    }

    /// How long the socket has stayed behind by more than the limit, as of `now`.
    pub fn over_limit_for(&self, now: Instant) -> Duration {
        self.over_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }

    /// When the socket started being behind by more than the limit.
    pub fn over_since(&self) -> Option<Instant> {
        self.over_since
    }

    /// Writes queued messages while the socket takes them, then flushes.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.failed.is_some() {
            return Poll::Ready(());
        }
        while !self.queue.is_empty() {
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    self.failed = Some(e);
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
            let Some(msg) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= msg.len();
            self.in_flight += msg.len();
            if let Err(e) = Pin::new(&mut self.ws).start_send(msg) {
                self.failed = Some(e);
                return Poll::Ready(());
            }
            self.unflushed = true;
        }
        if self.unflushed {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.unflushed = false;
                    self.in_flight = 0;
                    self.note_backlog();
                }
                Poll::Ready(Err(e)) => {
                    self.failed = Some(e);
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(())
    }

    /// The next message from the peer, writing and flushing meanwhile; cancel-safe. A write
    /// failure is reported here, as the socket's error.
    pub async fn next(&mut self) -> Option<Result<Message, WsError>> {
        std::future::poll_fn(|cx| {
            let _ = self.poll_write(cx);
            if let Some(e) = self.failed.take() {
                return Poll::Ready(Some(Err(e)));
            }
            Pin::new(&mut self.ws).poll_next(cx)
        })
        .await
    }

    /// Closes with `code` and `reason`: what is queued goes first, then the close frame;
    /// then reads until the peer's close (or EOF), all within `within`.
    pub async fn close(&mut self, code: u16, reason: &'static str, within: Duration) {
        let frame = Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        }));
        let closing = async {
            self.send(frame);
            std::future::poll_fn(|cx| self.poll_write(cx)).await;
            while let Some(Ok(msg)) = self.next().await {
                if msg.is_close() {
                    break;
                }
            }
        };
        if tokio::time::timeout(within, closing).await.is_err() {
            tracing::debug!("close handshake timed out");
        }
    }

    /// Waits (within `within`) for the peer's close or EOF, after the peer closed first:
    /// tungstenite answers the close itself; this flushes that answer.
    pub async fn finish(&mut self, within: Duration) {
        let draining = async { while let Some(Ok(_)) = self.next().await {} };
        let _ = tokio::time::timeout(within, draining).await;
    }
}
