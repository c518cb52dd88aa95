//! Fleet-wide admission against the agent plan (`AGENT_CONCURRENCY_LIMIT`): a call holds one of
//! `limit` leased items, `slot#0` … `slot#<limit-1>`, in the call-registry table. No counter can
//! drift: a slot is free when absent or expired, so a dead task's slots come back when their
//! leases run out.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};

use super::{CallRegistry, ClaimError, EXPIRES_AT, HOLDER, KEY};
use crate::metrics::Metrics;

/// Keys per `BatchGetItem` request (DynamoDB's limit).
const BATCH: u32 = 100;

/// One slot held by this holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The slot's index.
    pub index: u32,
    /// Who holds it (a CallSid, or a stream id for an unbound stream).
    pub holder: String,
}

/// The result of an admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A slot is held; `in_use` counts the fleet's live slots, this one included.
    Admitted {
        /// The slot.
        slot: Slot,
        /// Live slots across the fleet.
        in_use: u32,
    },
    /// Every slot is live.
    Full,
}

fn slot_key(index: u32) -> String {
    format!("slot#{index}")
}

impl CallRegistry {
    /// Admits `holder` for `lease`: its slot renewed, or a free one taken.
    ///
    /// # Errors
    /// [`ClaimError::Unavailable`] when the table cannot be read or written.
    pub async fn admit(
        &self,
        holder: &str,
        limit: u32,
        lease: Duration,
        metrics: &Metrics,
    ) -> Result<Admission, ClaimError> {
        let now = self.now();
        let slots = self.read_slots(limit, metrics).await?;
        let live = |h: &(String, u64)| h.1 >= now;
        let ours = |h: &(String, u64)| live(h) && h.0 == holder;
        // Live slots of other calls; an admission makes it one more.
        let others = slots.values().filter(|h| live(h) && !ours(h)).count() as u32;
        // Ours first (the webhook admitted this call, or a retry: the lease is extended), then
        // the free ones from a point that depends on the holder, so that concurrent
        // admissions mostly try different slots.
        let start = holder
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
            % limit.max(1);
        let held = slots.iter().filter(|(_, h)| ours(h)).map(|(&i, _)| i);
        let free = (0..limit)
            .map(|offset| (start + offset) % limit)
            .filter(|i| !slots.get(i).is_some_and(live));
        for index in held.chain(free) {
            match self.put_slot(index, holder, lease, now, metrics).await {
                Ok(()) => {
                    return Ok(Admission::Admitted {
                        slot: Slot {
                            index,
                            holder: holder.to_string(),
                        },
                        in_use: others.saturating_add(1),
                    })
                }
                // Someone took it since the read: try the next.
                Err(ClaimError::Taken) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Admission::Full)
    }

    /// Hands `slot` to `holder` (the outbound call's CallSid once Twilio named it), for
    /// `lease`, if it is still held by `slot.holder`.
    ///
    /// # Errors
    /// [`ClaimError::Taken`] when the slot is no longer held by `slot.holder`.
    pub async fn hand_over_slot(
        &self,
        slot: &Slot,
        holder: &str,
        lease: Duration,
        metrics: &Metrics,
    ) -> Result<(), ClaimError> {
        let until = self.now().saturating_add(lease.as_secs());
        let request = self
            .slot_write(slot.index, holder, until)
            .await
            .condition_expression("#h = :old")
            .expression_attribute_values(":old", AttributeValue::S(slot.holder.clone()));
        self.timed("hand_over_slot", metrics, request.send()).await
    }

    /// Renews `slot` for one registry lease, while it is ours.
    ///
    /// # Errors
    /// [`ClaimError::Taken`] when it is no longer ours; unavailable.
    pub async fn renew_slot(&self, slot: &Slot, metrics: &Metrics) -> Result<(), ClaimError> {
        let until = self.now().saturating_add(self.config.lease.as_secs());
        let request = self
            .slot_write(slot.index, &slot.holder, until)
            .await
            .condition_expression("#h = :me")
            .expression_attribute_values(":me", AttributeValue::S(slot.holder.clone()));
        self.timed("renew_slot", metrics, request.send()).await
    }

    /// Frees `slot` if it is still ours; a failure leaves it to expire with its lease.
    pub async fn release_slot(&self, slot: &Slot, metrics: &Metrics) {
        let request = self
            .client()
            .await
            .delete_item()
            .table_name(self.table())
            .key(KEY, AttributeValue::S(slot_key(slot.index)))
            .condition_expression("#h = :me")
            .expression_attribute_names("#h", HOLDER)
            .expression_attribute_values(":me", AttributeValue::S(slot.holder.clone()));
        if let Err(e) = self.timed("release_slot", metrics, request.send()).await {
            tracing::warn!(error = %e, slot = slot.index, "agent slot not released; it expires with its lease");
        }
    }

    /// Every slot that exists: index → (holder, expires_at).
    async fn read_slots(
        &self,
        limit: u32,
        metrics: &Metrics,
    ) -> Result<HashMap<u32, (String, u64)>, ClaimError> {
        let mut slots = HashMap::new();
        let mut first = 0;
        while first < limit {
            let last = limit.min(first.saturating_add(BATCH));
            let mut keys = KeysAndAttributes::builder().consistent_read(true);
            for index in first..last {
                keys = keys.keys(HashMap::from([(
                    KEY.to_string(),
                    AttributeValue::S(slot_key(index)),
                )]));
            }
            let keys = keys
                .build()
                .map_err(|e| ClaimError::Unavailable(e.to_string()))?;
            let mut pending = HashMap::from([(self.table().to_string(), keys)]);
            // Unprocessed keys (throttling) are asked for again, a few times.
            for _ in 0..4 {
                let request = self
                    .client()
                    .await
                    .batch_get_item()
                    .set_request_items(Some(pending.clone()));
                let out = self
                    .timed_value("read_slots", metrics, request.send())
                    .await?;
                for item in out
                    .responses
                    .into_iter()
                    .flatten()
                    .flat_map(|(_, items)| items)
                {
                    if let Some(slot) = parse_slot(&item) {
                        slots.insert(slot.0, (slot.1, slot.2));
                    }
                }
                match out.unprocessed_keys.filter(|u| !u.is_empty()) {
                    Some(rest) => pending = rest,
                    None => {
                        pending.clear();
                        break;
                    }
                }
            }
            if !pending.is_empty() {
                return Err(ClaimError::Unavailable("slots unprocessed".into()));
            }
            first = last;
        }
        Ok(slots)
    }

    async fn put_slot(
        &self,
        index: u32,
        holder: &str,
        lease: Duration,
        now: u64,
        metrics: &Metrics,
    ) -> Result<(), ClaimError> {
        let request = self
            .slot_write(index, holder, now.saturating_add(lease.as_secs()))
            .await
            .condition_expression("attribute_not_exists(#k) OR #e < :now OR #h = :me")
            .expression_attribute_names("#k", KEY)
            .expression_attribute_names("#e", EXPIRES_AT)
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":me", AttributeValue::S(holder.to_string()));
        self.timed("admit", metrics, request.send()).await
    }
}

impl CallRegistry {
    /// The `PutItem` of slot `index` for `holder` until `until` (`#h` names the holder
    /// attribute); the caller adds its condition.
    async fn slot_write(
        &self,
        index: u32,
        holder: &str,
        until: u64,
    ) -> aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder {
        self.client()
            .await
            .put_item()
            .table_name(self.table())
            .item(KEY, AttributeValue::S(slot_key(index)))
            .item(HOLDER, AttributeValue::S(holder.to_string()))
            .item(EXPIRES_AT, AttributeValue::N(until.to_string()))
            .expression_attribute_names("#h", HOLDER)
    }
}

/// `(index, holder, expires_at)` of a slot item.
fn parse_slot(item: &HashMap<String, AttributeValue>) -> Option<(u32, String, u64)> {
    let AttributeValue::S(key) = item.get(KEY)? else {
        return None;
    };
    let index = key.strip_prefix("slot#")?.parse().ok()?;
    let AttributeValue::S(holder) = item.get(HOLDER)? else {
        return None;
    };
    let AttributeValue::N(expires) = item.get(EXPIRES_AT)? else {
        return None;
    };
    Some((index, holder.clone(), expires.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_items_parse_and_foreign_items_do_not() {
        let item = HashMap::from([
            (KEY.to_string(), AttributeValue::S("slot#7".into())),
            (HOLDER.to_string(), AttributeValue::S("CA1".into())),
            (
                EXPIRES_AT.to_string(),
                AttributeValue::N("1800000000".into()),
            ),
        ]);
        assert_eq!(parse_slot(&item), Some((7, "CA1".into(), 1_800_000_000)));
        let mut other = item.clone();
        other.insert(KEY.to_string(), AttributeValue::S("call#CA1".into()));
        assert_eq!(parse_slot(&other), None);
    }
}
