//! Call events on Amazon EventBridge (`CALL_EVENTS_BUS`): a bounded queue drained by one task
//! into batched `PutEvents` (10 entries and 256 KB a request), failed entries retried a few
//! times. A call never waits for it or fails by it: a full queue or a lost event is counted
//! (`media_call_events_total{result}`) and logged with the error code only.

use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::ResultLabels;
use crate::retry::Backoff;

/// Entries per `PutEvents` request (the API's limit).
const MAX_ENTRIES: usize = 10;
/// Bytes per `PutEvents` request (the API's limit is 256 KB, entries' Source, DetailType,
/// Detail and Resources counted): kept under it with room to spare.
const MAX_REQUEST_BYTES: usize = 240 * 1024;
/// Attempts per entry (the first included).
const ATTEMPTS: u32 = 3;

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    /// The bus's name or ARN.
    pub bus: String,
    /// Events held while `PutEvents` is slow or failing; beyond it they are dropped.
    pub queue: usize,
    /// Time allowed for one request.
    pub timeout: Duration,
}

/// What a publish came to (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Result_ {
    Published,
    Failed,
    Dropped,
}

impl Result_ {
    fn label(self) -> &'static str {
        match self {
            Self::Published => "published",
            Self::Failed => "failed",
            Self::Dropped => "dropped",
        }
    }
}

struct Event {
    detail_type: &'static str,
    detail: String,
}

/// The publisher: [`EventBus::publish`] enqueues, a background task sends.
pub struct EventBus {
    /// `None` once closed.
    tx: Mutex<Option<mpsc::Sender<Event>>>,
    counts: Family<ResultLabels, Counter>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus").finish_non_exhaustive()
    }
}

impl EventBus {
    /// Starts the sender for `config`, counting into `counts`. The AWS client is built from the
    /// environment (region, credentials, `AWS_ENDPOINT_URL`), like every other AWS client here.
    pub fn start(config: BusConfig, counts: Family<ResultLabels, Counter>) -> Self {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let task = tokio::spawn(send_loop(config, rx, counts.clone()));
        Self {
            tx: Mutex::new(Some(tx)),
            counts,
            task: Mutex::new(Some(task)),
        }
    }

    /// Queues an event with `record` as its `Detail`; never waits. `false` when the queue was
    /// full (the event is dropped and counted).
    pub fn publish(&self, detail_type: &'static str, record: &Map<String, Value>) -> bool {
        let event = Event {
            detail_type,
            detail: serde_json::to_string(record).unwrap_or_default(),
        };
        let sent = lock(&self.tx)
            .as_ref()
            .is_some_and(|tx| tx.try_send(event).is_ok());
        if !sent {
            count(&self.counts, Result_::Dropped, 1);
            tracing::warn!(
                detail_type,
                "call event dropped: the queue is full or closed"
            );
        }
        sent
    }

    /// Sends what is queued and stops, within `deadline` (on SIGTERM, after the calls);
    /// later events are dropped.
    pub async fn close(&self, deadline: Duration) {
        drop(lock(&self.tx).take());
        let Some(mut task) = lock(&self.task).take() else {
            return;
        };
        if tokio::time::timeout(deadline, &mut task).await.is_err() {
            task.abort();
            tracing::warn!("call events still queued at shutdown were not sent");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn count(counts: &Family<ResultLabels, Counter>, result: Result_, n: u64) {
    counts
        .get_or_create(&ResultLabels {
            result: result.label(),
        })
        .inc_by(n);
}

async fn client(timeout: Duration) -> aws_sdk_eventbridge::Client {
    // Retries are ours (per entry, with the queue in mind); the SDK makes one attempt.
    aws_sdk_eventbridge::Client::new(&crate::aws::sdk_config(timeout, 1).await)
}

fn entry(bus: &str, detail_type: &str, detail: &str) -> PutEventsRequestEntry {
    PutEventsRequestEntry::builder()
        .event_bus_name(bus)
        .source(crate::record::SOURCE)
        .detail_type(detail_type)
        .detail(detail)
        .build()
}

/// A publisher that sends each event before it returns (media-lambda: nothing may run after
/// the response, the sandbox freezes). Two attempts within the request timeout.
pub struct DirectBus {
    config: BusConfig,
    client: tokio::sync::OnceCell<aws_sdk_eventbridge::Client>,
}

impl std::fmt::Debug for DirectBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectBus").finish_non_exhaustive()
    }
}

impl DirectBus {
    /// A publisher for `config`; the client is built on first use.
    pub fn new(config: BusConfig) -> Self {
        Self {
            config,
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// Sends one event with `record` as its `Detail`.
    ///
    /// # Errors
    /// EventBridge's error code (`unreachable` when it could not be asked) once both attempts
    /// failed; never the record.
    pub async fn publish(
        &self,
        detail_type: &'static str,
        record: &Map<String, Value>,
    ) -> Result<(), String> {
        let client = self
            .client
            .get_or_init(|| client(self.config.timeout))
            .await;
        let detail = serde_json::to_string(record).unwrap_or_default();
        let mut error = String::new();
        for attempt in 0..2 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let sent = client
                .put_events()
                .entries(entry(&self.config.bus, detail_type, &detail))
                .send()
                .await;
            match sent {
                Ok(out) => match out.entries().first().and_then(|e| e.error_code()) {
                    None => return Ok(()),
                    Some(code) => error = code.to_string(),
                },
                Err(e) => {
                    error = aws_sdk_eventbridge::error::ProvideErrorMetadata::code(&e)
                        .unwrap_or("unreachable")
                        .to_string();
                }
            }
        }
        Err(error)
    }
}

/// The size `PutEvents` counts for an entry.
fn entry_bytes(e: &Event) -> usize {
    crate::record::SOURCE.len() + e.detail_type.len() + e.detail.len()
}

async fn send_loop(
    config: BusConfig,
    mut rx: mpsc::Receiver<Event>,
    counts: Family<ResultLabels, Counter>,
) {
    let client = client(config.timeout).await;
    let mut batch: Vec<(Event, u32)> = Vec::with_capacity(MAX_ENTRIES);
    while let Some(first) = rx.recv().await {
        batch.push((first, 0));
        let mut bytes = entry_bytes(&batch[0].0);
        while batch.len() < MAX_ENTRIES {
            match rx.try_recv() {
                Ok(next) if bytes + entry_bytes(&next) <= MAX_REQUEST_BYTES => {
                    bytes += entry_bytes(&next);
                    batch.push((next, 0));
                }
                // Too big for this request: the next one starts with it.
                Ok(next) => {
                    send(&client, &config.bus, &mut batch, &counts).await;
                    bytes = entry_bytes(&next);
                    batch.push((next, 0));
                }
                Err(_) => break,
            }
        }
        send(&client, &config.bus, &mut batch, &counts).await;
    }
}

/// Sends `batch` until every entry is in or out of attempts; empties it.
async fn send(
    client: &aws_sdk_eventbridge::Client,
    bus: &str,
    batch: &mut Vec<(Event, u32)>,
    counts: &Family<ResultLabels, Counter>,
) {
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
    let mut attempt = 0;
    while !batch.is_empty() {
        let entries: Vec<PutEventsRequestEntry> = batch
            .iter()
            .map(|(e, _)| entry(bus, e.detail_type, &e.detail))
            .collect();
        // Which entries failed, retryable or not (an entry without an error code is in).
        let failed: Vec<Option<bool>> = match client
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => {
                let results = out.entries();
                (0..batch.len())
                    .map(|i| {
                        results.get(i).and_then(|r| r.error_code()).map(|code| {
                            tracing::warn!(error_code = code, "call event refused by EventBridge");
                            matches!(code, "ThrottlingException" | "InternalFailure")
                        })
                    })
                    .collect()
            }
            Err(e) => {
                let code = aws_sdk_eventbridge::error::ProvideErrorMetadata::code(&e)
                    .unwrap_or("unreachable")
                    .to_string();
                tracing::warn!(error_code = %code, entries = batch.len(), "EventBridge PutEvents failed");
                vec![Some(true); batch.len()]
            }
        };
        let mut retry = Vec::new();
        let (mut published, mut lost) = (0, 0);
        for ((event, tries), failure) in batch.drain(..).zip(failed) {
            match failure {
                None => published += 1,
                Some(true) if tries + 1 < ATTEMPTS => retry.push((event, tries + 1)),
                Some(_) => lost += 1,
            }
        }
        count(counts, Result_::Published, published);
        count(counts, Result_::Failed, lost);
        *batch = retry;
        if !batch.is_empty() {
            tokio::time::sleep(backoff.delay(attempt)).await;
            attempt += 1;
        }
    }
}
