//! The outbound side of one WebSocket: a bounded queue measured in bytes, fed with typed
//! messages, and the writer task that is the only owner of the sink. Audio is dropped (and
//! counted) above the byte limit; control messages (marks, clear, pong, close) never are.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::twilio::message::{Outbound, OutboundMark, OutboundMedia};

/// Messages the queue holds at most, whatever their size (audio is also bounded in bytes).
const QUEUE_MESSAGES: usize = 4096;

/// Why an audio message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The peer is behind by more than the byte limit: the frame is dropped.
    Backpressure,
    /// The writer has gone (the socket is closing).
    Closed,
}

struct Queued {
    message: Message,
    bytes: usize,
}

/// The sending half: typed constructors for every message the server sends.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Queued>,
    queued: Arc<AtomicUsize>,
    limit: usize,
    over_since: Option<Instant>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Queued({} bytes)", self.bytes)
    }
}

/// The receiving half, consumed by [`write_loop`].
#[derive(Debug)]
pub struct Writer {
    rx: mpsc::Receiver<Queued>,
    queued: Arc<AtomicUsize>,
}

/// A new outbox whose audio is bounded by `limit_bytes` of queued, unsent data.
pub fn channel(limit_bytes: usize) -> (Outbox, Writer) {
    let (tx, rx) = mpsc::channel(QUEUE_MESSAGES);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            tx,
            queued: Arc::clone(&queued),
            limit: limit_bytes,
            over_since: None,
        },
        Writer { rx, queued },
    )
}

impl Outbox {
    /// Bytes queued and not yet written to the socket.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// How long the queue has been above the limit without coming back under it.
    pub fn over_limit_for(&mut self, now: Instant) -> Duration {
        if self.queued_bytes() <= self.limit {
            self.over_since = None;
            return Duration::ZERO;
        }
        now - *self.over_since.get_or_insert(now)
    }

    /// Queues a Twilio `media` message carrying `payload_b64`.
    ///
    /// # Errors
    /// [`Refused::Backpressure`] above the byte limit (the caller counts the drop),
    /// [`Refused::Closed`] when the writer is gone.
    pub fn media(&mut self, stream_sid: &str, payload_b64: &str) -> Result<(), Refused> {
        if self.queued_bytes() > self.limit {
            return Err(Refused::Backpressure);
        }
        let json = Outbound::Media {
            stream_sid,
            media: OutboundMedia {
                payload: payload_b64,
            },
        }
        .to_json();
        self.push(Message::text(json))
    }

    /// Queues a Twilio `mark`.
    ///
    /// # Errors
    /// [`Refused::Closed`] when the writer is gone.
    pub fn mark(&mut self, stream_sid: &str, name: &str) -> Result<(), Refused> {
        let json = Outbound::Mark {
            stream_sid,
            mark: OutboundMark { name },
        }
        .to_json();
        self.push(Message::text(json))
    }

    /// Queues a Twilio `clear`.
    ///
    /// # Errors
    /// [`Refused::Closed`] when the writer is gone.
    pub fn clear(&mut self, stream_sid: &str) -> Result<(), Refused> {
        self.push(Message::text(Outbound::Clear { stream_sid }.to_json()))
    }

    /// Queues a text frame `pong` (the answer to a text `ping`).
    ///
    /// # Errors
    /// [`Refused::Closed`] when the writer is gone.
    pub fn pong_text(&mut self) -> Result<(), Refused> {
        self.push(Message::text("pong"))
    }

    /// Queues a WebSocket ping (keepalive).
    ///
    /// # Errors
    /// [`Refused::Closed`] when the writer is gone.
    pub fn ping(&mut self) -> Result<(), Refused> {
        self.push(Message::Ping(Bytes::from_static(b"ka")))
    }

    /// Queues a close frame; the writer sends it, flushes and stops.
    ///
    /// # Errors
    /// [`Refused::Closed`] when the writer is gone.
    pub fn close(&mut self, code: u16, reason: &'static str) -> Result<(), Refused> {
        self.push(Message::Close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        })))
    }

    fn push(&mut self, message: Message) -> Result<(), Refused> {
        let bytes = message.len();
        self.queued.fetch_add(bytes, Ordering::AcqRel);
        self.tx.try_send(Queued { message, bytes }).map_err(|e| {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => Refused::Backpressure,
                mpsc::error::TrySendError::Closed(_) => Refused::Closed,
            }
        })
    }
}

/// Writes queued messages to `sink` until a close frame has been sent or every [`Outbox`] is
/// dropped; then closes the sink.
///
/// # Errors
/// The sink's error (the peer went away); the caller treats it as a disconnect.
pub async fn write_loop<S>(mut sink: S, mut writer: Writer) -> Result<(), S::Error>
where
    S: Sink<Message> + Unpin,
{
    while let Some(Queued { message, bytes }) = writer.rx.recv().await {
        let is_close = matches!(message, Message::Close(_));
        let sent = sink.send(message).await;
        writer.queued.fetch_sub(bytes, Ordering::AcqRel);
        sent?;
        if is_close {
            return Ok(());
        }
    }
    sink.close().await
}

#[cfg(test)]
mod tests;
