//! Once-only actions across every task and Lambda sandbox, in the claims' table: a webhook
//! Twilio retried (`I-Twilio-Idempotency-Token`) and a `POST /calls` the client retried
//! (`Idempotency-Key`). The first request writes its record `pending`, then completes it with
//! its answer, which a retry in the window gets; a concurrent retry is told the key is in use,
//! and a failed first attempt deletes the record so that a retry can try again.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use sha2::{Digest as _, Sha256};

use super::{CallRegistry, ClaimError, EXPIRES_AT, KEY, WRITER};
use crate::metrics::Metrics;

/// How long an idempotency key holds its first answer.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How long a first request may stay under way: past it (its sandbox died mid-request), the
/// key is free again rather than answering "in use" for a day. Longer than the function's
/// timeout.
pub const PENDING_WINDOW: Duration = Duration::from_secs(60);
/// How long a Twilio webhook's idempotency token is remembered (Twilio retries within
/// seconds; a day is generous).
pub const WEBHOOK_DEDUPE_WINDOW: Duration = Duration::from_secs(24 * 3600);

const STATE: &str = "state";
const REQUEST: &str = "request";
const STATUS: &str = "status";
const ANSWER: &str = "answer";

/// The answer stored for an idempotency key: the HTTP status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// HTTP status of the first answer.
    pub status: u16,
    /// Its body (ids and statuses only: never numbers or the request's values).
    pub body: String,
}

/// What [`CallRegistry::idempotency_begin`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The key is new: this request goes ahead; finish or abandon with the ticket.
    Fresh(Ticket),
    /// The key already has an answer.
    Done(StoredAnswer),
    /// Another request with the key is still under way.
    Pending,
    /// The key was used with a different request body.
    Mismatch,
}

/// The first request's hold on an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    key: String,
    nonce: String,
}

/// The item key of an idempotency key: hashed (a client's key may carry anything) and scoped
/// to the route.
fn idempotency_item(route: &str, key: &str) -> String {
    format!("idem#{route}#{}", hex(&Sha256::digest(key.as_bytes())))
}

/// A hash of the request body, to tell a true retry from a reused key.
pub fn request_hash(body: &[u8]) -> String {
    hex(&Sha256::digest(body))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl CallRegistry {
    /// Records `token` (a Twilio webhook's `I-Twilio-Idempotency-Token`) for `kind`:
    /// a ticket the first time (give it back with [`Self::idempotency_abandon`] if acting on
    /// the webhook failed, so Twilio's retry acts), [`ClaimError::Taken`] for a retry of a
    /// webhook already acted on.
    ///
    /// # Errors
    /// [`ClaimError`] as above, or unavailable.
    pub async fn first_delivery(
        &self,
        kind: &str,
        token: &str,
        metrics: &Metrics,
    ) -> Result<Ticket, ClaimError> {
        let until = self.now().saturating_add(WEBHOOK_DEDUPE_WINDOW.as_secs());
        let key = format!("{kind}#{}", hex(&Sha256::digest(token.as_bytes())));
        let writer = uuid::Uuid::new_v4().simple().to_string();
        let ticket = Ticket {
            key: key.clone(),
            nonce: writer.clone(),
        };
        let request = self
            .client()
            .await
            .put_item()
            .table_name(self.table())
            .item(KEY, AttributeValue::S(key))
            .item(EXPIRES_AT, AttributeValue::N(until.to_string()))
            .item(WRITER, AttributeValue::S(writer.clone()))
            .condition_expression("attribute_not_exists(#k) OR #w = :w")
            .expression_attribute_names("#k", KEY)
            .expression_attribute_names("#w", WRITER)
            .expression_attribute_values(":w", AttributeValue::S(writer));
        self.timed("first_delivery", metrics, request.send())
            .await
            .map(|()| ticket)
    }

    /// Starts a request under an idempotency key for `route`, or finds its earlier fate.
    ///
    /// # Errors
    /// [`ClaimError::Unavailable`] when the table cannot be read or written.
    pub async fn idempotency_begin(
        &self,
        route: &str,
        key: &str,
        request: &str,
        metrics: &Metrics,
    ) -> Result<Begin, ClaimError> {
        let item = idempotency_item(route, key);
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let now = self.now();
        let put = self
            .client()
            .await
            .put_item()
            .table_name(self.table())
            .item(KEY, AttributeValue::S(item.clone()))
            .item(
                EXPIRES_AT,
                AttributeValue::N(now.saturating_add(PENDING_WINDOW.as_secs()).to_string()),
            )
            .item(WRITER, AttributeValue::S(nonce.clone()))
            .item(STATE, AttributeValue::S("pending".into()))
            .item(REQUEST, AttributeValue::S(request.to_string()))
            .condition_expression("attribute_not_exists(#k) OR #e < :now OR #w = :w")
            .expression_attribute_names("#k", KEY)
            .expression_attribute_names("#e", EXPIRES_AT)
            .expression_attribute_names("#w", WRITER)
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":w", AttributeValue::S(nonce.clone()));
        match self.timed("idempotency_begin", metrics, put.send()).await {
            Ok(()) => return Ok(Begin::Fresh(Ticket { key: item, nonce })),
            Err(ClaimError::Taken) => {}
            Err(e) => return Err(e),
        }
        let found = self.get(&item, metrics).await?;
        let Some(found) = found else {
            // Abandoned between our write and our read: the caller may try again.
            return Ok(Begin::Pending);
        };
        let text = |name: &str| match found.get(name) {
            Some(AttributeValue::S(s)) => Some(s.as_str()),
            _ => None,
        };
        if text(REQUEST) != Some(request) {
            return Ok(Begin::Mismatch);
        }
        if text(STATE) != Some("done") {
            return Ok(Begin::Pending);
        }
        let status = match found.get(STATUS) {
            Some(AttributeValue::N(n)) => n.parse().unwrap_or(200),
            _ => 200,
        };
        Ok(Begin::Done(StoredAnswer {
            status,
            body: text(ANSWER).unwrap_or("{}").to_string(),
        }))
    }

    /// Stores the first request's answer under its key.
    ///
    /// # Errors
    /// [`ClaimError`] when the record could not be completed (the call was placed; a retry
    /// then waits and is told the key is in use).
    pub async fn idempotency_finish(
        &self,
        ticket: &Ticket,
        answer: &StoredAnswer,
        metrics: &Metrics,
    ) -> Result<(), ClaimError> {
        let request = self
            .client()
            .await
            .update_item()
            .table_name(self.table())
            .key(KEY, AttributeValue::S(ticket.key.clone()))
            .update_expression("SET #s = :done, #st = :status, #a = :answer, #e = :until")
            .condition_expression("#w = :w")
            .expression_attribute_names("#e", EXPIRES_AT)
            .expression_attribute_values(
                ":until",
                AttributeValue::N(
                    self.now()
                        .saturating_add(IDEMPOTENCY_WINDOW.as_secs())
                        .to_string(),
                ),
            )
            .expression_attribute_names("#s", STATE)
            .expression_attribute_names("#st", STATUS)
            .expression_attribute_names("#a", ANSWER)
            .expression_attribute_names("#w", WRITER)
            .expression_attribute_values(":done", AttributeValue::S("done".into()))
            .expression_attribute_values(":status", AttributeValue::N(answer.status.to_string()))
            .expression_attribute_values(":answer", AttributeValue::S(answer.body.clone()))
            .expression_attribute_values(":w", AttributeValue::S(ticket.nonce.clone()));
        self.timed("idempotency_finish", metrics, request.send())
            .await
    }

    /// Gives the key back after the first request failed (nothing was placed, nothing was
    /// done): a retry may try again. Failures are logged; the record then expires with the window.
    pub async fn idempotency_abandon(&self, ticket: &Ticket, metrics: &Metrics) {
        let request = self
            .client()
            .await
            .delete_item()
            .table_name(self.table())
            .key(KEY, AttributeValue::S(ticket.key.clone()))
            .condition_expression("#w = :w")
            .expression_attribute_names("#w", WRITER)
            .expression_attribute_values(":w", AttributeValue::S(ticket.nonce.clone()));
        if let Err(e) = self
            .timed("idempotency_abandon", metrics, request.send())
            .await
        {
            tracing::warn!(error = %e, "idempotency record not released");
        }
    }

    /// One item, read consistently.
    async fn get(
        &self,
        key: &str,
        metrics: &Metrics,
    ) -> Result<Option<std::collections::HashMap<String, AttributeValue>>, ClaimError> {
        let request = self
            .client()
            .await
            .get_item()
            .table_name(self.table())
            .key(KEY, AttributeValue::S(key.to_string()))
            .consistent_read(true);
        self.timed_value("get", metrics, request.send())
            .await
            .map(|out| out.item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hashed_and_scoped_to_their_route() {
        let a = idempotency_item("calls", "order-1");
        assert!(a.starts_with("idem#calls#") && !a.contains("order-1"));
        assert_eq!(a.len(), "idem#calls#".len() + 64);
        assert_ne!(a, idempotency_item("calls", "order-2"));
        assert_ne!(a, idempotency_item("other", "order-1"));
        assert_eq!(request_hash(b"{}"), request_hash(b"{}"));
    }
}
