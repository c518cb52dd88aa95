//! Secret variables holding a value or an `ssm:/param/name` reference, behind one SSM client
//! (made only if a reference exists): batched `GetParameters`, a TTL cache, the last good value
//! kept when SSM fails. [`Secrets::load`] once at start-up, then [`Secrets::refresh_stale`]
//! before each Lambda event or [`Secrets::refresh_loop`] in a server.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{Mutex, OnceCell};
use tokio::time::Instant;

use crate::secret::Secret;

/// Prefix that marks a variable's value as an SSM parameter reference.
pub const SSM_PREFIX: &str = "ssm:";

/// `GetParameters` accepts at most this many names per call.
pub const MAX_NAMES_PER_CALL: usize = 10;

/// Default cache lifetime of a resolved parameter (`SECRETS_TTL_SECONDS`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// After a failed refresh, the next attempt waits at most this long (less if the TTL is
/// shorter), so a brief SSM outage is retried soon without hammering it.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Per-call timeout for SSM requests, so an outage cannot hold a handshake or an event.
const SSM_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// What a secret variable holds: the value itself or the name of an SSM parameter.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSpec {
    /// The secret value, given directly.
    Value(Secret<String>),
    /// An SSM parameter name (`/path/to/param`), resolved with decryption.
    Ssm(String),
}

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(v) => f.debug_tuple("Value").field(v).finish(),
            // Parameter names are not secret; they are logged on failures.
            Self::Ssm(name) => f.debug_tuple("Ssm").field(name).finish(),
        }
    }
}

/// Why a secret variable's reference is unusable. Never carries the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ssm reference: {0}")]
pub struct SpecError(&'static str);

impl SecretSpec {
    /// Reads a variable's raw value: `ssm:<name>` is a reference, anything else a value.
    ///
    /// # Errors
    /// [`SpecError`] when a reference has an empty or malformed parameter name.
    pub fn parse(raw: &str) -> Result<Self, SpecError> {
        let Some(name) = raw.strip_prefix(SSM_PREFIX) else {
            return Ok(Self::Value(Secret::new(raw.to_string())));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(SpecError("empty parameter name"));
        }
        if name.len() > 2048 {
            return Err(SpecError("parameter name too long"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'.' | b'-'))
        {
            return Err(SpecError(
                "parameter names may contain only letters, digits and / _ . -",
            ));
        }
        Ok(Self::Ssm(name.to_string()))
    }

    /// Whether this is an SSM reference.
    pub fn is_ssm(&self) -> bool {
        matches!(self, Self::Ssm(_))
    }
}

/// Errors resolving references at start-up. Messages name parameters, never values.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// SSM answered that these parameters do not exist (or are not readable as such).
    #[error("ssm parameter(s) not found: {}", .0.join(", "))]
    Missing(Vec<String>),
    /// SSM could not be asked (network, credentials, region, throttling).
    #[error("cannot read ssm parameter(s) {}: {detail}", .names.join(", "))]
    Unavailable {
        /// The parameters of the failed request.
        names: Vec<String>,
        /// The SDK's error chain (it never contains parameter values).
        detail: String,
    },
}

/// A secret as its consumers see it: always the current value.
///
/// Cloning is cheap. `Debug` never shows the value.
#[derive(Clone)]
pub struct SecretHandle(HandleKind);

#[derive(Clone)]
enum HandleKind {
    Value(Arc<Secret<String>>),
    Ssm { name: Arc<str>, store: Arc<Store> },
}

impl fmt::Debug for SecretHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            HandleKind::Value(_) => f.write_str("SecretHandle(value)"),
            HandleKind::Ssm { name, .. } => write!(f, "SecretHandle(ssm:{name})"),
        }
    }
}

impl SecretHandle {
    /// A handle on a fixed value.
    pub fn from_value(value: Secret<String>) -> Self {
        Self(HandleKind::Value(Arc::new(value)))
    }

    /// The current value; `None` only for a reference that was never loaded successfully.
    ///
    /// The returned `Arc` changes identity exactly when the value is replaced, so callers can
    /// cache work derived from it (keys) and compare with [`Arc::ptr_eq`].
    pub fn current(&self) -> Option<Arc<Secret<String>>> {
        match &self.0 {
            HandleKind::Value(v) => Some(Arc::clone(v)),
            HandleKind::Ssm { name, store } => store.value(name),
        }
    }

    /// The SSM parameter name behind this handle, if it is a reference.
    pub fn parameter_name(&self) -> Option<&str> {
        match &self.0 {
            HandleKind::Value(_) => None,
            HandleKind::Ssm { name, .. } => Some(name),
        }
    }
}

/// One cached parameter.
#[derive(Default)]
struct Entry {
    value: Option<Arc<Secret<String>>>,
    /// When the next fetch is due.
    due: Option<Instant>,
}

struct Store {
    entries: RwLock<HashMap<String, Entry>>,
}

impl Store {
    fn value(&self, name: &str) -> Option<Arc<Secret<String>>> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries.get(name).and_then(|e| e.value.clone())
    }
}

/// The store of resolved references: one per process, shared by every handle it gives out.
pub struct Secrets {
    store: Arc<Store>,
    ttl: Duration,
    client: OnceCell<aws_sdk_ssm::Client>,
    /// Serializes fetches: a refresh already under way is not repeated by another caller.
    refreshing: Mutex<()>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("parameters", &self.parameter_names())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Secrets {
    /// An empty store whose values live for `ttl` before they are fetched again.
    pub fn new(ttl: Duration) -> Self {
        Self {
            store: Arc::new(Store {
                entries: RwLock::new(HashMap::new()),
            }),
            ttl,
            client: OnceCell::new(),
            refreshing: Mutex::new(()),
        }
    }

    /// The handle for `spec`. A reference is registered here and has no value until
    /// [`Secrets::load`] succeeds.
    pub fn handle(&self, spec: &SecretSpec) -> SecretHandle {
        match spec {
            SecretSpec::Value(v) => SecretHandle::from_value(v.clone()),
            SecretSpec::Ssm(name) => {
                self.store
                    .entries
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(name.clone())
                    .or_default();
                SecretHandle(HandleKind::Ssm {
                    name: Arc::from(name.as_str()),
                    store: Arc::clone(&self.store),
                })
            }
        }
    }

    /// Registered parameter names, sorted.
    pub fn parameter_names(&self) -> Vec<String> {
        let entries = self
            .store
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<String> = entries.keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// Fetches every registered parameter. Does nothing, and creates no AWS client, when no
    /// reference was registered.
    ///
    /// # Errors
    /// [`SecretsError::Missing`] naming every parameter SSM does not know;
    /// [`SecretsError::Unavailable`] when SSM cannot be reached.
    pub async fn load(&self) -> Result<(), SecretsError> {
        let names = self.parameter_names();
        if names.is_empty() {
            return Ok(());
        }
        let _guard = self.refreshing.lock().await;
        let mut missing = Vec::new();
        for batch in names.chunks(MAX_NAMES_PER_CALL) {
            let fetched = self
                .fetch(batch)
                .await
                .map_err(|detail| SecretsError::Unavailable {
                    names: batch.to_vec(),
                    detail,
                })?;
            missing.extend(fetched.missing.iter().cloned());
            self.apply(fetched);
        }
        if missing.is_empty() {
            Ok(())
        } else {
            missing.sort_unstable();
            Err(SecretsError::Missing(missing))
        }
    }

    /// Fetches the parameters whose TTL has run out, keeping the last good value of any that
    /// SSM cannot deliver (logged as a warning with the parameter name). Cheap when nothing is
    /// due; if another refresh is under way it returns at once.
    pub async fn refresh_stale(&self) {
        let now = Instant::now();
        let due = self.due_names(now);
        if due.is_empty() {
            return;
        }
        let Ok(_guard) = self.refreshing.try_lock() else {
            return;
        };
        for batch in due.chunks(MAX_NAMES_PER_CALL) {
            match self.fetch(batch).await {
                Ok(fetched) => {
                    for name in &fetched.missing {
                        tracing::warn!(parameter = %name, "secret parameter missing, keeping last value");
                    }
                    self.apply(fetched);
                }
                Err(detail) => {
                    tracing::warn!(
                        parameters = %batch.join(","),
                        error = %detail,
                        "secret refresh failed, keeping last values"
                    );
                    self.postpone(batch, self.retry_after());
                }
            }
        }
    }

    /// Refreshes due parameters for as long as it is polled; never completes. Pending forever
    /// (no work at all) when no reference is registered. Run it next to a server with
    /// `select!`.
    pub async fn refresh_loop(&self) -> std::convert::Infallible {
        if self.parameter_names().is_empty() {
            return std::future::pending().await;
        }
        loop {
            let next = self.next_due().unwrap_or_else(|| Instant::now() + self.ttl);
            // Never spin: at least 100 ms between rounds.
            let next = next.max(Instant::now() + Duration::from_millis(100));
            tokio::time::sleep_until(next).await;
            self.refresh_stale().await;
        }
    }

    fn retry_after(&self) -> Duration {
        self.ttl.min(RETRY_AFTER)
    }

    fn due_names(&self, now: Instant) -> Vec<String> {
        let entries = self
            .store
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<String> = entries
            .iter()
            .filter(|(_, e)| e.due.is_none_or(|due| due <= now))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort_unstable();
        names
    }

    fn next_due(&self) -> Option<Instant> {
        let entries = self
            .store
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        entries.values().filter_map(|e| e.due).min()
    }

    fn postpone(&self, names: &[String], by: Duration) {
        let due = Instant::now() + by;
        let mut entries = self
            .store
            .entries
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for name in names {
            if let Some(entry) = entries.get_mut(name) {
                entry.due = Some(due);
            }
        }
    }

    /// Stores fetched values; missing ones keep their last value and are retried soon.
    fn apply(&self, fetched: Fetched) {
        let due = Instant::now() + self.ttl;
        {
            let mut entries = self
                .store
                .entries
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for (name, value) in fetched.values {
                let Some(entry) = entries.get_mut(&name) else {
                    continue;
                };
                let changed = entry
                    .value
                    .as_ref()
                    .is_none_or(|old| old.expose() != value.expose());
                if changed {
                    entry.value = Some(Arc::new(value));
                }
                entry.due = Some(due);
            }
        }
        self.postpone(&fetched.missing, self.retry_after());
    }

    async fn client(&self) -> &aws_sdk_ssm::Client {
        self.client
            .get_or_init(|| async {
                let timeouts = aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(SSM_OPERATION_TIMEOUT)
                    .connect_timeout(Duration::from_secs(2))
                    .build();
                let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .timeout_config(timeouts)
                    .load()
                    .await;
                aws_sdk_ssm::Client::new(&config)
            })
            .await
    }

    /// One `GetParameters` call with decryption for at most [`MAX_NAMES_PER_CALL`] names.
    async fn fetch(&self, names: &[String]) -> Result<Fetched, String> {
        let output = self
            .client()
            .await
            .get_parameters()
            .set_names(Some(names.to_vec()))
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| aws_sdk_ssm::error::DisplayErrorContext(e).to_string())?;
        let values = output
            .parameters()
            .iter()
            .filter_map(|p| Some((p.name()?.to_string(), Secret::new(p.value()?.to_string()))))
            .collect::<Vec<_>>();
        let mut missing: Vec<String> = output.invalid_parameters().to_vec();
        // A name SSM neither returned nor listed as invalid is treated as missing too.
        for name in names {
            if !values.iter().any(|(n, _)| n == name) && !missing.contains(name) {
                missing.push(name.clone());
            }
        }
        Ok(Fetched { values, missing })
    }
}

/// The result of one `GetParameters` call.
struct Fetched {
    values: Vec<(String, Secret<String>)>,
    missing: Vec<String>,
}

#[cfg(test)]
mod tests;
