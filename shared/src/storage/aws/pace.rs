//! Pacing of the strongly consistent `Query` that rebuilds a package's snapshot from every item
//! of its partition (`docs/scaling.md`, part 3). DynamoDB serves a partition at most ~3,000
//! read units a second; a 3,000-version package's `Query` takes ~3,750, so unpaced it would
//! take the partition's whole second from every packument read and tarball redirect of the
//! package. Paced, a rebuild spends at most `REGISTRY_REBUILD_READ_UNITS` a second (1,000 by
//! default): the first page at once, each next one when the units spent so far are due.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use super::codec::Item;

/// Read units a second a rebuild may spend when the configuration says nothing: a third of a
/// partition's ~3,000.
pub const DEFAULT_REBUILD_READ_UNITS: u32 = 1_000;

/// A rebuild's spending so far against its budget.
#[derive(Debug)]
pub(super) struct Pace {
    per_second: f64,
    spent: f64,
}

impl Pace {
    /// A budget of `per_second` read units a second (0 counts as 1).
    pub(super) fn new(per_second: u32) -> Self {
        Pace {
            per_second: f64::from(per_second.max(1)),
            spent: 0.0,
        }
    }

    /// Counts a page of `units` read units; how long to wait, `elapsed` after the first page
    /// was asked for, before asking for the next one.
    pub(super) fn after_page(&mut self, units: f64, elapsed: Duration) -> Duration {
        self.spent += units.max(0.0);
        Duration::from_secs_f64(self.spent / self.per_second).saturating_sub(elapsed)
    }
}

/// The read units a strongly consistent `Query` spends on `items`: their size in all, by
/// DynamoDB's rules (attribute names and values), in 4 KB units rounded up. Used with the units
/// the response reports, whichever is more: emulators report a fixed figure.
pub(super) fn read_units(items: &[Item]) -> u32 {
    let bytes: usize = items
        .iter()
        .map(|item| {
            item.iter()
                .map(|(k, v)| k.len() + value_size(v))
                .sum::<usize>()
        })
        .sum();
    u32::try_from(bytes.div_ceil(4096).max(1)).unwrap_or(u32::MAX)
}

/// An attribute value's size as DynamoDB counts it (numbers approximated by their text).
fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Ss(v) | AttributeValue::Ns(v) => v.iter().map(String::len).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_asked_for_when_the_units_spent_are_due() {
        let mut pace = Pace::new(1_000);
        // The first page (1 MB, 256 units) came back after 30 ms: the next is due at 256 ms.
        assert_eq!(
            pace.after_page(256.0, Duration::from_millis(30)),
            Duration::from_millis(226)
        );
        // Four pages in 1.1 s is under budget at the fourth: 1,024 units are due at 1,024 ms.
        pace.after_page(256.0, Duration::from_millis(600));
        pace.after_page(256.0, Duration::from_millis(900));
        assert_eq!(
            pace.after_page(256.0, Duration::from_millis(1_100)),
            Duration::ZERO
        );
        // A small package's one page never waits, whatever the budget.
        assert_eq!(Pace::new(0).after_page(0.0, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn read_units_count_names_and_values_in_4_kb_units() {
        let item = |doc: usize| -> Item {
            [
                ("pk".to_string(), AttributeValue::S("@acme/big".into())),
                ("sk".to_string(), AttributeValue::S("V#1.0.0".into())),
                ("doc".to_string(), AttributeValue::S("x".repeat(doc))),
            ]
            .into_iter()
            .collect()
        };
        // 2 + 9 + 2 + 7 + 3 + 4,000 = 4,023 bytes: one unit; two such items: two.
        assert_eq!(read_units(&[item(4_000)]), 1);
        assert_eq!(read_units(&[item(4_000), item(4_000)]), 2);
        assert_eq!(read_units(&[item(4_100)]), 2);
        // A megabyte page of 1 KB items: 256 units.
        let page: Vec<Item> = (0..1024).map(|_| item(1_024 - 23)).collect();
        assert_eq!(read_units(&page), 256);
    }
}
