//! Planned operations (`plan`) as DynamoDB requests: conditions and updates as expressions over
//! the `layout` names, and one `TransactWriteItems` per planned transaction.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};

use super::AwsStorage;
use super::codec::{Item, encode_package, iso};
use super::errors::{classify, internal};
use super::layout::{ItemKey, attr, state};
use super::plan::{Cancel, Condition, Op};
use crate::domain::PackageName;
use crate::storage::{StoreError, VersionChange};

/// How a transaction failed.
pub(super) enum TransactFailure {
    /// DynamoDB cancelled it: one reason per item, in order (a single `Conflict` when it
    /// refused the whole call).
    Cancelled(Vec<Cancel>),
    /// The request failed otherwise.
    Store(StoreError),
}

/// An expression with its `#name` and `:value` placeholders.
#[derive(Default)]
struct Expression {
    text: String,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expression {
    fn new(text: String) -> Self {
        Self {
            text,
            ..Self::default()
        }
    }

    fn name(mut self, placeholder: &str, name: &str) -> Self {
        self.names.insert(placeholder.into(), name.into());
        self
    }

    fn value(mut self, placeholder: &str, value: AttributeValue) -> Self {
        self.values.insert(placeholder.into(), value);
        self
    }

    /// The placeholders of both, for a request that has a condition and an update.
    fn merge(mut self, other: Expression) -> (String, Self) {
        self.names.extend(other.names);
        self.values.extend(other.values);
        (other.text, self)
    }

    /// `None` for an empty map: DynamoDB refuses empty placeholder maps.
    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

/// A condition as an expression. `state` and `rev` are DynamoDB reserved words, hence `#`.
fn condition(c: Condition) -> Expression {
    let live = || AttributeValue::S(state::LIVE.into());
    match c {
        Condition::Absent => Expression::new(format!("attribute_not_exists({})", attr::PK)),
        Condition::AbsentOrLive => Expression::new(format!(
            "attribute_not_exists({}) OR #state = :live",
            attr::PK
        ))
        .name("#state", attr::STATE)
        .value(":live", live()),
        Condition::Live => {
            Expression::new(format!("attribute_exists({}) AND #state = :live", attr::PK))
                .name("#state", attr::STATE)
                .value(":live", live())
        }
        Condition::Revision(rev) => Expression::new("#rev = :expected".into())
            .name("#rev", attr::REVISION)
            .value(":expected", AttributeValue::N(rev.to_string())),
    }
}

/// A change to a live version as an update expression.
fn update(change: &VersionChange) -> Expression {
    match change {
        VersionChange::Deprecate(_, Some(message)) => {
            Expression::new(format!("SET {} = :message", attr::DEPRECATED))
                .value(":message", AttributeValue::S(message.clone()))
        }
        VersionChange::Deprecate(_, None) => {
            Expression::new(format!("REMOVE {}", attr::DEPRECATED))
        }
        VersionChange::Unpublish(_, at) => Expression::new(format!(
            "SET #state = :unpublished, {} = :at REMOVE {}, {}, {}",
            attr::UNPUBLISHED_AT,
            attr::DOC,
            attr::README,
            attr::DEPRECATED
        ))
        .name("#state", attr::STATE)
        .value(":unpublished", AttributeValue::S(state::UNPUBLISHED.into()))
        .value(":at", AttributeValue::S(iso(at))),
        // Beside the version's doc, which decoding reads them over (the doc is not rewritten).
        VersionChange::Sign(_, signatures) => {
            Expression::new(format!("SET {} = :signatures", attr::SIGNATURES)).value(
                ":signatures",
                AttributeValue::S(serde_json::to_string(signatures).unwrap_or_default()),
            )
        }
    }
}

impl AwsStorage {
    /// A conditional put of `item`.
    fn put(&self, item: Item, c: Condition) -> Result<TransactWriteItem, StoreError> {
        let c = condition(c);
        let put = Put::builder()
            .table_name(&self.settings.table)
            .set_item(Some(item))
            .condition_expression(&c.text)
            .set_expression_attribute_names(c.names())
            .set_expression_attribute_values(c.values())
            .build()
            .map_err(internal)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// One planned operation as a transaction item; `version_item` is the encoded item of the
    /// write's new version (encoded once, before its README went to S3).
    pub(super) fn transact_item(
        &self,
        name: &PackageName,
        op: &Op<'_>,
        version_item: Option<&Item>,
    ) -> Result<TransactWriteItem, StoreError> {
        match op {
            Op::PutVersion { condition, .. } => {
                let item = version_item.ok_or_else(|| internal("version put without its item"))?;
                self.put(item.clone(), *condition)
            }
            Op::PutPackage { record, condition } => self.put(encode_package(record)?, *condition),
            Op::UpdateVersion {
                change,
                condition: c,
            } => {
                let version = change.version();
                let (text, expression) = condition(*c).merge(update(change));
                let update = Update::builder()
                    .table_name(&self.settings.table)
                    .set_key(Some(ItemKey::Version(name, version).attributes()))
                    .update_expression(text)
                    .condition_expression(&expression.text)
                    .set_expression_attribute_names(expression.names())
                    .set_expression_attribute_values(expression.values())
                    .build()
                    .map_err(internal)?;
                Ok(TransactWriteItem::builder().update(update).build())
            }
        }
    }

    /// Runs one `TransactWriteItems`.
    pub(super) async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<(), TransactFailure> {
        match self
            .ddb
            .transact_write_items()
            .set_transact_items(Some(items))
            // Idempotency: if an attempt landed but its answer was lost, the SDK's retry with the
            // same token succeeds instead of failing its own conditions.
            .client_request_token(hex::encode(rand::random::<[u8; 16]>()))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(c)) =
                    e.as_service_error()
                {
                    let reasons = c
                        .cancellation_reasons()
                        .iter()
                        .map(|r| Cancel::from_code(r.code()))
                        .collect();
                    return Err(TransactFailure::Cancelled(reasons));
                }
                if e.as_service_error()
                    .is_some_and(|s| s.meta().code() == Some("TransactionConflictException"))
                {
                    return Err(TransactFailure::Cancelled(vec![Cancel::Conflict]));
                }
                Err(TransactFailure::Store(classify(e, self.table())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use semver::Version;

    use super::*;

    // The expressions the table has always been written with: a change here is a change of
    // what concurrent writers of older releases agree on.
    #[test]
    fn conditions_and_updates_read_as_before() {
        assert_eq!(
            condition(Condition::Absent).text,
            "attribute_not_exists(pk)"
        );
        let overwrite = condition(Condition::AbsentOrLive);
        assert_eq!(overwrite.text, "attribute_not_exists(pk) OR #state = :live");
        assert_eq!(overwrite.names["#state"], "state");
        assert_eq!(overwrite.values[":live"], AttributeValue::S("live".into()));
        let rev = condition(Condition::Revision(3));
        assert_eq!(rev.text, "#rev = :expected");
        assert_eq!(rev.names["#rev"], "rev");
        assert_eq!(rev.values[":expected"], AttributeValue::N("3".into()));
        let (text, merged) = condition(Condition::Live).merge(update(&VersionChange::Unpublish(
            Version::new(1, 0, 0),
            Utc::now(),
        )));
        assert_eq!(
            text,
            "SET #state = :unpublished, unpublished_at = :at REMOVE doc, readme, deprecated"
        );
        assert_eq!(merged.text, "attribute_exists(pk) AND #state = :live");
        assert_eq!(merged.values.len(), 3);
        assert_eq!(
            update(&VersionChange::Deprecate(Version::new(1, 0, 0), None)).text,
            "REMOVE deprecated"
        );
        let empty = condition(Condition::Absent);
        assert!(empty.names().is_none() && empty.values().is_none());
    }
}
