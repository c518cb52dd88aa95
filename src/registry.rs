//! The fleet-wide call registry on DynamoDB (`CALL_REGISTRY_TABLE`): a token opens one stream,
//! once, and a live CallSid has one stream across the fleet (`jti#…` and `call#…` items).
//! A `jti#` item is never deleted (a replay finds it); its per-handshake `writer` nonce lets
//! through the SDK's retry of a write that landed but answered late. TTL deletion is lazy, so
//! every condition checks `expires_at` itself. Callers fail closed on a [`ClaimError`] for a
//! new call and never end a live one over it.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata as _};
use aws_sdk_dynamodb::types::AttributeValue;
use tokio::sync::OnceCell;

use crate::auth::Clock;
use crate::config::CallRegistryConfig;
use crate::metrics::Metrics;

pub mod once;
pub mod slots;

/// The table's hash key attribute.
pub const KEY: &str = "pk";
/// The table's TTL attribute: seconds since the Unix epoch.
pub const EXPIRES_AT: &str = "expires_at";
/// The attribute naming the process that holds a CallSid claim.
pub const HOLDER: &str = "holder";
/// The attribute naming the handshake that wrote a token claim.
pub const WRITER: &str = "writer";

/// Why a claim was not granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// Someone holds it already (a replayed token, a second stream for a live call).
    #[error("already claimed")]
    Taken,
    /// The table could not be written (timeout, throttling, network, permissions); the
    /// text is the SDK's error code or kind, never item data.
    #[error("call registry unavailable: {0}")]
    Unavailable(String),
}

/// The registry client of one process.
#[derive(Debug)]
pub struct CallRegistry {
    config: CallRegistryConfig,
    holder: String,
    client: OnceCell<aws_sdk_dynamodb::Client>,
    held: Mutex<HashSet<String>>,
    /// Agent slots this process holds for live calls, renewed with the claims.
    held_slots: Mutex<Vec<slots::Slot>>,
    /// What leases and expiries are measured on (the system clock; fixed in tests).
    clock: Clock,
}

impl CallRegistry {
    /// A registry for `config`; the AWS client is built on first use (or by [`Self::warm`]).
    pub fn new(config: CallRegistryConfig) -> Self {
        Self::with_clock(config, Clock::System)
    }

    /// A registry whose leases and expiries are written and compared on `clock`: a test
    /// sees a lease lapse by moving the clock, not by waiting for it.
    pub fn with_clock(config: CallRegistryConfig, clock: Clock) -> Self {
        Self {
            config,
            holder: uuid::Uuid::new_v4().simple().to_string(),
            client: OnceCell::new(),
            held: Mutex::new(HashSet::new()),
            held_slots: Mutex::new(Vec::new()),
            clock,
        }
    }

    /// A registry over an already-built DynamoDB client (its own timeouts and retries), on
    /// `clock`: what an embedding service or a test with its own SDK config uses.
    pub fn with_client(
        config: CallRegistryConfig,
        clock: Clock,
        client: aws_sdk_dynamodb::Client,
    ) -> Self {
        let registry = Self::with_clock(config, clock);
        let _ = registry.client.set(client);
        registry
    }

    /// Now on the registry's clock, in Unix seconds.
    fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.config.table
    }

    /// How often held claims are renewed: a third of the lease.
    pub fn renew_interval(&self) -> Duration {
        self.config.lease / 3
    }

    /// Builds the AWS client now (region, credentials chain, `AWS_ENDPOINT_URL`), so the
    /// first call does not pay for it.
    pub async fn warm(&self) {
        self.client().await;
    }

    async fn client(&self) -> &aws_sdk_dynamodb::Client {
        self.client
            .get_or_init(|| async {
                aws_sdk_dynamodb::Client::new(&crate::aws::sdk_config(self.config.timeout, 2).await)
            })
            .await
    }

    /// Claims a token id for good: `Ok` the first time, [`ClaimError::Taken`] on a replay.
    /// The item expires at `expires_at` (the token's `exp` plus the verifier's leeway).
    ///
    /// # Errors
    /// [`ClaimError`] as above.
    pub async fn claim_token(
        &self,
        jti: &str,
        expires_at: u64,
        metrics: &Metrics,
    ) -> Result<(), ClaimError> {
        // One nonce per handshake, the same in every attempt the SDK makes of this request.
        let writer = uuid::Uuid::new_v4().simple().to_string();
        let request = self
            .client()
            .await
            .put_item()
            .table_name(&self.config.table)
            .item(KEY, AttributeValue::S(format!("jti#{jti}")))
            .item(EXPIRES_AT, AttributeValue::N(expires_at.to_string()))
            .item(WRITER, AttributeValue::S(writer.clone()))
            .condition_expression("attribute_not_exists(#k) OR #w = :w")
            .expression_attribute_names("#k", KEY)
            .expression_attribute_names("#w", WRITER)
            .expression_attribute_values(":w", AttributeValue::S(writer));
        self.timed("claim_token", metrics, request.send()).await
    }

    /// Claims `call_sid` for this process for one lease; renewed by [`Self::renew_held`]
    /// until [`Self::release_call`].
    ///
    /// # Errors
    /// [`ClaimError::Taken`] while another live stream holds it; [`ClaimError::Unavailable`].
    pub async fn claim_call(&self, call_sid: &str, metrics: &Metrics) -> Result<(), ClaimError> {
        self.put_claim(Claim::New, call_sid, metrics).await?;
        self.held_set().insert(call_sid.to_string());
        Ok(())
    }

    /// Writes this process's claim on `call_sid` with a fresh lease.
    async fn put_claim(
        &self,
        claim: Claim,
        call_sid: &str,
        metrics: &Metrics,
    ) -> Result<(), ClaimError> {
        let now = self.now();
        let request = self
            .client()
            .await
            .put_item()
            .table_name(&self.config.table)
            .item(KEY, AttributeValue::S(call_key(call_sid)))
            .item(HOLDER, AttributeValue::S(self.holder.clone()))
            .item(EXPIRES_AT, AttributeValue::N(self.lease_end(now)))
            .expression_attribute_names("#h", HOLDER)
            .expression_attribute_values(":me", AttributeValue::S(self.holder.clone()));
        let (op, request) = match claim {
            Claim::New => (
                "claim_call",
                request
                    .condition_expression("attribute_not_exists(#k) OR #e < :now OR #h = :me")
                    .expression_attribute_names("#k", KEY)
                    .expression_attribute_names("#e", EXPIRES_AT)
                    .expression_attribute_values(":now", AttributeValue::N(now.to_string())),
            ),
            // Never recreates an item a release deleted meanwhile.
            Claim::Renewal => ("renew_call", request.condition_expression("#h = :me")),
        };
        self.timed(op, metrics, request.send()).await
    }

    /// Releases this process's claim on `call_sid` (a claim someone else took over after
    /// our lease ran out is left alone). Failures are logged and counted: the lease expires.
    pub async fn release_call(&self, call_sid: &str, metrics: &Metrics) {
        if !self.held_set().remove(call_sid) {
            return;
        }
        let request = self
            .client()
            .await
            .delete_item()
            .table_name(&self.config.table)
            .key(KEY, AttributeValue::S(call_key(call_sid)))
            .condition_expression("#h = :me")
            .expression_attribute_names("#h", HOLDER)
            .expression_attribute_values(":me", AttributeValue::S(self.holder.clone()));
        if let Err(e) = self.timed("release_call", metrics, request.send()).await {
            tracing::warn!(error = %e, "call registry release failed; the claim expires with its lease");
        }
    }

    /// Renews the lease of every CallSid this process holds. A failure never touches the
    /// call: it is logged and counted, and the next round tries again.
    pub async fn renew_held(&self, metrics: &Metrics) {
        let held: Vec<String> = self.held_set().iter().cloned().collect();
        for call_sid in held {
            if let Err(e) = self.put_claim(Claim::Renewal, &call_sid, metrics).await {
                tracing::warn!(error = %e, call_sid = %call_sid, "call registry lease renewal failed");
            }
        }
        let slots = self.slots_held().clone();
        for slot in slots {
            if let Err(e) = self.renew_slot(&slot, metrics).await {
                tracing::warn!(error = %e, slot = slot.index, "agent slot renewal failed");
            }
        }
    }

    /// Keeps `slot` renewed until [`Self::drop_slot`] (a live call's).
    pub fn keep_slot(&self, slot: slots::Slot) {
        self.slots_held().push(slot);
    }

    /// Releases a kept slot (the call ended).
    pub async fn drop_slot(&self, slot: &slots::Slot, metrics: &Metrics) {
        self.slots_held().retain(|s| s != slot);
        self.release_slot(slot, metrics).await;
    }

    /// Forgets a kept slot without touching the table (its lease expires).
    pub fn forget_slot(&self, slot: &slots::Slot) {
        self.slots_held().retain(|s| s != slot);
    }

    fn slots_held(&self) -> std::sync::MutexGuard<'_, Vec<slots::Slot>> {
        self.held_slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Renews held claims every [`Self::renew_interval`], forever (run it as a background
    /// task of the server).
    pub async fn renew_loop(&self, metrics: &Metrics) {
        let mut tick = tokio::time::interval(self.renew_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.renew_held(metrics).await;
        }
    }

    /// Forgets a claim without touching the table (the call task is gone without a
    /// release; the lease expires on its own).
    pub fn forget(&self, call_sid: &str) {
        self.held_set().remove(call_sid);
    }

    fn held_set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lease_end(&self, now: u64) -> String {
        now.saturating_add(self.config.lease.as_secs()).to_string()
    }

    /// Runs one request with the overall timeout, counting its result and latency.
    async fn timed<T, E>(
        &self,
        op: &'static str,
        metrics: &Metrics,
        request: impl std::future::Future<Output = Result<T, aws_sdk_dynamodb::error::SdkError<E>>>,
    ) -> Result<(), ClaimError>
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        self.timed_value(op, metrics, request).await.map(|_| ())
    }

    /// [`Self::timed`], keeping the response.
    async fn timed_value<T, E>(
        &self,
        op: &'static str,
        metrics: &Metrics,
        request: impl std::future::Future<Output = Result<T, aws_sdk_dynamodb::error::SdkError<E>>>,
    ) -> Result<T, ClaimError>
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.config.timeout, request).await {
            Err(_) => Err(ClaimError::Unavailable("timeout".into())),
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(classify(&e)),
        };
        let label = match &result {
            Ok(_) => "ok",
            Err(ClaimError::Taken) => "taken",
            Err(ClaimError::Unavailable(_)) => "error",
        };
        metrics.registry_request(op, label, started.elapsed().as_secs_f64());
        result
    }
}

/// Which CallSid claim [`CallRegistry::put_claim`] writes.
#[derive(Debug, Clone, Copy)]
enum Claim {
    /// At `start`: granted when the item is absent, expired, or already ours.
    New,
    /// A lease renewal: granted only while the item is ours.
    Renewal,
}

fn call_key(call_sid: &str) -> String {
    format!("call#{call_sid}")
}

fn classify<E>(e: &aws_sdk_dynamodb::error::SdkError<E>) -> ClaimError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match e.code() {
        Some("ConditionalCheckFailedException") => ClaimError::Taken,
        Some(code) => ClaimError::Unavailable(code.to_string()),
        None => {
            let text = DisplayErrorContext(e).to_string();
            // The SDK's own words (dispatch failure, timeout); no item data is in them.
            ClaimError::Unavailable(text.chars().take(200).collect())
        }
    }
}
