//! Search entries in the table: one item per package (spread over `SEARCH_SHARDS` partitions),
//! put or deleted in the last transaction of the package's write, and a log item per change,
//! which other instances read to keep their indexes current without reading every entry again.
//!
//! Why items and not one index object per scope in S3: an object would be read, changed and
//! written back by every publish (tens of MB at 50,000 packages, racing publishes needing
//! conditional retries), while these items are written with the package, atomically, for about
//! 4 more write units, and a warm instance catches up with one small `Query` of the log.

use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use futures_util::future::try_join_all;

use super::AwsStorage;
use super::codec::{Item, s_attr, ttl};
use super::errors::{classify, internal};
use super::layout::{ItemKey, Partition, SEARCH_SHARDS, attr};
use crate::search::SearchEntry;
use crate::storage::{SearchChange, SearchLoad, StoreError};

/// How long log items are kept: far longer than any instance goes between refreshes (an
/// instance older than this loads the entries again; see `search_changes`).
const LOG_KEPT: Duration = Duration::days(7);
/// Each read of the log goes back this far before the watermark: a write's log item is stamped
/// before its transaction commits, and writers' clocks differ a little.
const LOG_OVERLAP: Duration = Duration::seconds(5);

/// The log's order key: time (µs, so keys sort as times), package, revision.
fn log_order(at: DateTime<Utc>, name: &str, revision: u64) -> String {
    format!(
        "{}#{name}#{revision}",
        at.to_rfc3339_opts(SecondsFormat::Micros, true)
    )
}

/// The time a watermark (an order key's time part) stands for.
fn watermark_time(watermark: &str) -> Option<DateTime<Utc>> {
    let time = watermark.split('#').next()?;
    DateTime::parse_from_rfc3339(time)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl AwsStorage {
    /// The transaction items that store `change`: the entry put or deleted, and its log item.
    pub(super) fn search_items(
        &self,
        change: &SearchChange,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let now = Utc::now();
        let (name, revision, entry_item) = match change {
            SearchChange::Keep => return Ok(Vec::new()),
            SearchChange::Put(entry) => {
                let mut item = ItemKey::SearchEntry(&entry.name).attributes();
                item.insert(
                    attr::ENTRY.into(),
                    AttributeValue::S(serde_json::to_string(entry).map_err(internal)?),
                );
                let put = Put::builder()
                    .table_name(&self.settings.table)
                    .set_item(Some(item))
                    .build()
                    .map_err(internal)?;
                (
                    &entry.name,
                    entry.revision,
                    TransactWriteItem::builder().put(put).build(),
                )
            }
            SearchChange::Remove { name, revision } => {
                let delete = Delete::builder()
                    .table_name(&self.settings.table)
                    .set_key(Some(ItemKey::SearchEntry(name).attributes()))
                    .build()
                    .map_err(internal)?;
                (
                    name,
                    *revision,
                    TransactWriteItem::builder().delete(delete).build(),
                )
            }
        };
        let order = log_order(now, name.as_str(), revision);
        let mut log = ItemKey::SearchLog(&order).attributes();
        log.insert(
            attr::CHANGE.into(),
            AttributeValue::S(serde_json::to_string(change).map_err(internal)?),
        );
        log.insert(attr::TTL.into(), ttl(now + LOG_KEPT));
        let put = Put::builder()
            .table_name(&self.settings.table)
            .set_item(Some(log))
            .build()
            .map_err(internal)?;
        Ok(vec![
            entry_item,
            TransactWriteItem::builder().put(put).build(),
        ])
    }

    /// Every entry, read from the partitions side by side; the watermark is the time the reads
    /// began, so the log read from there on holds every write the reads may have missed.
    pub(super) async fn load_search(&self) -> Result<SearchLoad, StoreError> {
        let began = log_order(Utc::now(), "", 0);
        let shards = (0..SEARCH_SHARDS).map(|shard| self.search_partition(shard));
        let mut entries = Vec::new();
        for items in try_join_all(shards).await? {
            for item in items {
                if let Some(Ok(entry)) =
                    s_attr(&item, attr::ENTRY).map(serde_json::from_str::<SearchEntry>)
                {
                    entries.push(entry);
                } else {
                    tracing::warn!("skipped a search entry item that does not decode");
                }
            }
        }
        Ok(SearchLoad {
            entries,
            watermark: Some(began),
        })
    }

    /// The items of one entry partition, every page.
    async fn search_partition(&self, shard: u8) -> Result<Vec<Item>, StoreError> {
        self.query_all(Partition::SearchEntries(shard).pk(), None)
            .await
    }

    /// The log's changes since `watermark` (less the overlap), and the new watermark: the
    /// latest order key seen, or the old one.
    pub(super) async fn search_log(
        &self,
        watermark: Option<&str>,
    ) -> Result<(Vec<SearchChange>, Option<String>), StoreError> {
        let Some(since) = watermark.and_then(watermark_time) else {
            return Err(internal("the search log was asked for without a watermark"));
        };
        let from = log_order(since - LOG_OVERLAP, "", 0);
        let items = self
            .query_all(Partition::SearchLog.pk(), Some(from))
            .await?;
        let mut latest = watermark.map(str::to_string);
        let mut changes = Vec::with_capacity(items.len());
        for item in &items {
            if let Some(order) = s_attr(item, attr::SK)
                && latest.as_deref().is_none_or(|l| order > l)
            {
                latest = Some(order.to_string());
            }
            if let Some(Ok(change)) =
                s_attr(item, attr::CHANGE).map(serde_json::from_str::<SearchChange>)
            {
                changes.push(change);
            } else {
                tracing::warn!("skipped a search log item that does not decode");
            }
        }
        Ok((changes, latest))
    }

    /// Every item of partition `pk` (with `sk >= from`), by a strongly consistent paginated
    /// `Query`.
    async fn query_all(&self, pk: String, from: Option<String>) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let mut request = self
                .ddb
                .query()
                .table_name(&self.settings.table)
                .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start);
            request = match &from {
                Some(from) => request
                    .key_condition_expression(format!(
                        "{} = :pk AND {} >= :from",
                        attr::PK,
                        attr::SK
                    ))
                    .expression_attribute_values(":from", AttributeValue::S(from.clone())),
                None => request.key_condition_expression(format!("{} = :pk", attr::PK)),
            };
            let page = request
                .send()
                .await
                .map_err(|e| classify(e, self.table()))?;
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(items),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_as_times_and_carry_their_watermark() {
        let a = Utc::now();
        let b = a + Duration::microseconds(1);
        assert!(log_order(a, "@z/z", 9) < log_order(b, "@a/a", 1));
        let key = log_order(a, "@acme/x", 3);
        assert_eq!(watermark_time(&key).unwrap(), a.with_nanosecond_truncated());
        assert!(log_order(a - LOG_OVERLAP, "", 0) < key);
    }

    trait Truncate {
        fn with_nanosecond_truncated(self) -> Self;
    }

    impl Truncate for DateTime<Utc> {
        fn with_nanosecond_truncated(self) -> Self {
            use chrono::Timelike;
            self.with_nanosecond(self.nanosecond() / 1_000 * 1_000)
                .unwrap()
        }
    }
}
