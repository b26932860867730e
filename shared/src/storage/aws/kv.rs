//! The key-value store: records in the table under `Partition::Kv` (no package name can start
//! with `~`), with DynamoDB's TTL attribute set from the expiry.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use super::AwsStorage;
use super::codec::{decode_kv, encode_kv, s_attr};
use super::errors::classify;
use super::layout::{ItemKey, Partition, attr};
use crate::storage::{Consistency, KvStore, StoreError};

#[async_trait]
impl KvStore for AwsStorage {
    async fn get(&self, namespace: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_with(namespace, id, Consistency::Strong).await
    }

    async fn get_with(
        &self,
        namespace: &str,
        id: &str,
        consistency: Consistency,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.settings.table)
            .set_key(Some(ItemKey::Kv { namespace, id }.attributes()))
            .consistent_read(consistency == Consistency::Strong)
            .send()
            .await
            .map_err(|e| classify(e, self.table()))?;
        Ok(out.item.as_ref().and_then(decode_kv))
    }

    async fn put(
        &self,
        namespace: &str,
        id: &str,
        value: &[u8],
        expires: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.ddb
            .put_item()
            .table_name(&self.settings.table)
            .set_item(Some(encode_kv(namespace, id, value, expires)))
            .send()
            .await
            .map_err(|e| classify(e, self.table()))?;
        Ok(())
    }

    async fn put_new(
        &self,
        namespace: &str,
        id: &str,
        value: &[u8],
        expires: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        // Absent, or present but past its TTL (DynamoDB deletes expired items only eventually).
        let put = self
            .ddb
            .put_item()
            .table_name(&self.settings.table)
            .set_item(Some(encode_kv(namespace, id, value, expires)))
            .condition_expression(format!(
                "attribute_not_exists({}) OR #ttl <= :now",
                attr::PK
            ))
            .expression_attribute_names("#ttl", attr::TTL)
            .expression_attribute_values(
                ":now",
                AttributeValue::N(Utc::now().timestamp().to_string()),
            );
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(aws_sdk_dynamodb::operation::put_item::PutItemError::is_conditional_check_failed_exception) =>
            {
                Ok(false)
            }
            Err(e) => Err(classify(e, self.table())),
        }
    }

    async fn delete(&self, namespace: &str, id: &str) -> Result<(), StoreError> {
        self.ddb
            .delete_item()
            .table_name(&self.settings.table)
            .set_key(Some(ItemKey::Kv { namespace, id }.attributes()))
            .send()
            .await
            .map_err(|e| classify(e, self.table()))?;
        Ok(())
    }

    async fn list(&self, namespace: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .ddb
                .query()
                .table_name(&self.settings.table)
                .key_condition_expression(format!("{} = :pk", attr::PK))
                .expression_attribute_values(
                    ":pk",
                    AttributeValue::S(Partition::Kv(namespace).pk()),
                )
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify(e, self.table()))?;
            for item in page.items() {
                if let (Some(id), Some(value)) = (s_attr(item, attr::SK), decode_kv(item)) {
                    out.push((id.to_string(), value));
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }
}
