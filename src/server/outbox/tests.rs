use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::StreamExt as _;
use tokio::time::Instant;

use super::*;

/// A sink that accepts nothing until released: a peer that stopped reading.
struct Stalled;

impl Sink<Message> for Stalled {
    type Error = std::io::Error;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Pending
    }
    fn start_send(self: Pin<&mut Self>, _: Message) -> Result<(), Self::Error> {
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Pending
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Pending
    }
}

#[tokio::test(start_paused = true)]
async fn slow_peer_drops_audio_but_never_control_and_reports_how_long() {
    let (mut outbox, writer) = channel(2_000);
    let task = tokio::spawn(write_loop(Stalled, writer));
    let payload = "A".repeat(216);
    let mut dropped = 0;
    for _ in 0..50 {
        match outbox.media("MZ1", &payload) {
            Ok(()) => {}
            Err(Refused::Backpressure) => dropped += 1,
            Err(Refused::Closed) => panic!("writer gone"),
        }
    }
    // ~270 bytes a message: the limit admits about 8, the rest are dropped.
    assert!(dropped >= 40, "dropped {dropped}");
    assert!(outbox.queued_bytes() <= 2_000 + 300);
    // Control messages still go through above the limit.
    assert!(outbox.clear("MZ1").is_ok());
    assert!(outbox.mark("MZ1", "m1").is_ok());
    let t0 = Instant::now();
    assert!(outbox.over_limit_for(t0) == Duration::ZERO || outbox.queued_bytes() > 2_000);
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(outbox.over_limit_for(Instant::now()) >= Duration::from_secs(5));
    task.abort();
}

#[tokio::test]
async fn writer_sends_in_order_then_closes() {
    let (tx, rx) = futures_channel_pair();
    let (mut outbox, writer) = channel(10_000);
    outbox.media("MZ1", "AAAA").unwrap();
    outbox.mark("MZ1", "m1").unwrap();
    outbox.clear("MZ1").unwrap();
    outbox.close(1000, "bye").unwrap();
    write_loop(tx, writer).await.unwrap();
    let got: Vec<Message> = rx.collect().await;
    assert_eq!(got.len(), 4);
    assert_eq!(
        got[0].to_text().unwrap(),
        r#"{"event":"media","streamSid":"MZ1","media":{"payload":"AAAA"}}"#
    );
    assert_eq!(
        got[1].to_text().unwrap(),
        r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"m1"}}"#
    );
    assert_eq!(
        got[2].to_text().unwrap(),
        r#"{"event":"clear","streamSid":"MZ1"}"#
    );
    assert!(got[3].is_close());
    assert_eq!(outbox.queued_bytes(), 0);
    assert_eq!(outbox.mark("MZ1", "late"), Err(Refused::Closed));
}

/// An in-memory sink/stream pair (futures' mpsc) for the writer.
fn futures_channel_pair() -> (
    impl Sink<Message, Error = std::io::Error> + Unpin,
    impl futures_util::Stream<Item = Message>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let sink = futures_util::sink::unfold(tx, |tx, msg: Message| async move {
        tx.send(msg).map_err(|_| std::io::Error::other("closed"))?;
        Ok::<_, std::io::Error>(tx)
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    (Box::pin(sink), stream)
}
