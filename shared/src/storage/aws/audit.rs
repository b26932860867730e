//! The audit log in the metadata table, out of the packages' partitions (which packument reads
//! `Query`).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use chrono::{DateTime, Utc};

use super::AwsStorage;
use super::codec::{Item, audit_event, encode_audit};
use super::errors::{classify, internal};
use super::layout::{AUDIT_DAY_PREFIX, ItemKey, Partition, attr};
use crate::domain::audit::{AuditEvent, AuditQuery, order_time};
use crate::storage::{AuditLog, AuditRetention, StoreError};

/// The condition of every audit write: the item is new.
const APPEND_ONLY: &str = "attribute_not_exists(pk)";

/// The audit log in the metadata table: each event is an item in its day's partition
/// (`Partition::AuditDay`) and, if it names a package, a copy in `Partition::AuditPackage`; both
/// with the event's order key as sort key (time, then a random id: events never overwrite one
/// another), the event as JSON, and a TTL when a retention is set. A query by package is one
/// `Query` of that partition; a query since a time is one `Query` per day since then; only a
/// query of everything with no retention set reads the day partitions by a filtered `Scan`.
pub struct AwsAuditLog {
    storage: AwsStorage,
    retention: AuditRetention,
}

impl AwsStorage {
    /// The audit log in this backend's table, keeping events for `retention`.
    pub fn audit_log(&self, retention: AuditRetention) -> AwsAuditLog {
        AwsAuditLog {
            storage: self.clone(),
            retention,
        }
    }
}

impl AwsAuditLog {
    /// The event's item in `partition`.
    fn item(&self, partition: Partition<'_>, event: &AuditEvent, json: &str) -> Item {
        let order = event.order_key();
        let key = ItemKey::Audit {
            partition,
            order: &order,
        };
        encode_audit(key, json, self.retention.expires(event.time))
    }

    /// A put of a new event: never over an existing item (an event is written once; with the
    /// role's denial of updates and deletes of `~audit/*`, the log is append-only).
    fn put(&self, item: Item) -> Result<Put, StoreError> {
        Put::builder()
            .table_name(&self.storage.settings.table)
            .set_item(Some(item))
            .condition_expression(APPEND_ONLY)
            .build()
            .map_err(internal)
    }

    /// The live events of `items`, as the query wants them.
    fn events_of(&self, items: &[Item], query: &AuditQuery, out: &mut Vec<AuditEvent>) {
        let now = Utc::now();
        for item in items {
            match audit_event(item).map(serde_json::from_str::<AuditEvent>) {
                Some(Ok(e)) if query.matches(&e) && !self.retention.expired(e.time, now) => {
                    out.push(e);
                }
                Some(Ok(_)) => {}
                _ => tracing::warn!(target: "audit", "skipped an audit item that is not an event"),
            }
        }
    }

    /// One partition's events since `since`, newest first, until `limit` are found.
    async fn query_partition(
        &self,
        partition: Partition<'_>,
        query: &AuditQuery,
        since: Option<DateTime<Utc>>,
        limit: Option<usize>,
        out: &mut Vec<AuditEvent>,
    ) -> Result<(), StoreError> {
        let s = &self.storage;
        let pk = partition.pk();
        let mut start = None;
        loop {
            let mut request = s
                .ddb
                .query()
                .table_name(&s.settings.table)
                .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
                .scan_index_forward(false)
                .consistent_read(true)
                .set_exclusive_start_key(start);
            request = match since {
                Some(since) => request
                    .key_condition_expression(format!(
                        "{} = :pk AND {} >= :since",
                        attr::PK,
                        attr::SK
                    ))
                    .expression_attribute_values(":since", AttributeValue::S(order_time(since))),
                None => request.key_condition_expression(format!("{} = :pk", attr::PK)),
            };
            let page = request.send().await.map_err(|e| classify(e, s.table()))?;
            self.events_of(page.items(), query, out);
            if limit.is_some_and(|l| out.len() >= l) {
                return Ok(());
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(()),
            }
        }
    }

    /// Every day partition's events, by a filtered `Scan` (no retention bounds the days).
    async fn scan_days(
        &self,
        query: &AuditQuery,
        out: &mut Vec<AuditEvent>,
    ) -> Result<(), StoreError> {
        let s = &self.storage;
        let mut start = None;
        loop {
            let page = s
                .ddb
                .scan()
                .table_name(&s.settings.table)
                .filter_expression(format!("begins_with({}, :prefix)", attr::PK))
                .expression_attribute_values(
                    ":prefix",
                    AttributeValue::S(AUDIT_DAY_PREFIX.to_string()),
                )
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify(e, s.table()))?;
            self.events_of(page.items(), query, out);
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(()),
            }
        }
    }
}

#[async_trait]
impl AuditLog for AwsAuditLog {
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let json = serde_json::to_string(event).map_err(internal)?;
        let s = &self.storage;
        let day = self.item(Partition::AuditDay(event.time.date_naive()), event, &json);
        let Some(package) = &event.package else {
            let put = s
                .ddb
                .put_item()
                .set_table_name(Some(s.settings.table.clone()))
                .set_item(Some(day))
                .condition_expression(APPEND_ONLY)
                .send()
                .await;
            return match put {
                Ok(_) => Ok(()),
                // The key holds a random id: an item there is this event, written by an
                // attempt whose answer was lost and retried by the SDK.
                Err(e)
                    if e.as_service_error().is_some_and(
                        aws_sdk_dynamodb::operation::put_item::PutItemError::is_conditional_check_failed_exception,
                    ) =>
                {
                    Ok(())
                }
                Err(e) => Err(classify(e, s.table())),
            };
        };
        // Both copies or neither; the token makes an SDK retry of a landed attempt succeed.
        let items = vec![
            TransactWriteItem::builder().put(self.put(day)?).build(),
            TransactWriteItem::builder()
                .put(self.put(self.item(Partition::AuditPackage(package), event, &json))?)
                .build(),
        ];
        s.ddb
            .transact_write_items()
            .set_transact_items(Some(items))
            .client_request_token(hex::encode(rand::random::<[u8; 16]>()))
            .send()
            .await
            .map_err(|e| classify(e, s.table()))?;
        Ok(())
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let now = Utc::now();
        // Expired events read as absent, so the retention bounds every query.
        let since = match (query.since, self.retention.oldest(now)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let mut out = Vec::new();
        if let Some(package) = &query.package {
            let partition = Partition::AuditPackage(package);
            self.query_partition(partition, query, since, query.limit, &mut out)
                .await?;
        } else if let Some(since) = since {
            // Newest day first, so that a limit stops early.
            let mut day = now.date_naive();
            let first = since.date_naive();
            while day >= first {
                let left = query.limit.map(|l| l.saturating_sub(out.len()));
                if left == Some(0) {
                    break;
                }
                let mut found = Vec::new();
                let partition = Partition::AuditDay(day);
                self.query_partition(partition, query, Some(since), left, &mut found)
                    .await?;
                out.extend(found);
                match day.pred_opt() {
                    Some(d) => day = d,
                    None => break,
                }
            }
        } else {
            self.scan_days(query, &mut out).await?;
        }
        Ok(query.finish(out))
    }
}
