//! The answer to `GET /-/v1/search`, in the shape npm's client reads.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{Hit, Indexed};

/// The answer for one page of hits out of `total` readable matches. `base_url` makes each
/// package's `links.npm` (its page on this registry).
pub fn search_response(page: &[Hit], total: usize, base_url: &str, now: DateTime<Utc>) -> Value {
    let objects: Vec<Value> = page
        .iter()
        .map(|hit| {
            json!({
                "package": hit.entry.package(base_url),
                "score": {
                    "final": hit.score,
                    "detail": {"quality": hit.score, "popularity": hit.score, "maintenance": hit.score},
                },
                "searchScore": hit.points,
                "flags": flags(&hit.entry),
            })
        })
        .collect();
    json!({
        "objects": objects,
        "total": total,
        "time": now.to_rfc3339_opts(SecondsFormat::Millis, true),
    })
}

/// `flags`, as the public registry sends them: only those that are set.
fn flags(entry: &Indexed) -> Value {
    let mut flags = json!({});
    if entry.deprecated {
        flags["deprecated"] = json!(true);
    }
    if entry.unstable {
        flags["unstable"] = json!(true);
    }
    flags
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::search::entry::test_entry;
    use crate::search::{SearchIndex, SearchQuery};

    #[test]
    fn results_carry_what_npm_reads() {
        let mut index = SearchIndex::new();
        index.put(test_entry(
            "@acme/widget",
            "0.2.0",
            json!({
                "description": "Widgets",
                "keywords": ["ui"],
                "maintainers": [{"name": "ann", "email": "ann@example.com"}],
                "homepage": "https://acme.example",
            }),
            None,
        ));
        index.put(test_entry("plain", "1.0.0", json!({}), None));
        let hits = index
            .answer(&SearchQuery::parse("widget", None, None).unwrap())
            .hits;
        let now = Utc::now();
        let body = search_response(&hits, 1, "http://r.example/", now);
        assert_eq!(body["total"], 1);
        let package = &body["objects"][0]["package"];
        assert_eq!(package["name"], "@acme/widget");
        assert_eq!(package["scope"], "acme");
        assert_eq!(package["version"], "0.2.0");
        assert_eq!(package["keywords"], json!(["ui"]));
        assert_eq!(
            package["maintainers"],
            json!([{"username": "ann", "email": "ann@example.com"}])
        );
        assert_eq!(package["publisher"]["username"], "ann");
        assert_eq!(
            package["links"],
            json!({
                "npm": "http://r.example/-/web/package/@acme/widget",
                "homepage": "https://acme.example",
            })
        );
        assert!(DateTime::parse_from_rfc3339(package["date"].as_str().unwrap()).is_ok());
        assert_eq!(body["objects"][0]["flags"], json!({"unstable": true}));
        assert_eq!(body["objects"][0]["score"]["final"], 1.0);

        // A package without people still has an array of maintainers.
        let hits = index
            .answer(&SearchQuery::parse("plain", None, None).unwrap())
            .hits;
        let body = search_response(&hits, 1, "http://r.example", now);
        let package = &body["objects"][0]["package"];
        assert_eq!(package["maintainers"], json!([]));
        assert_eq!(package["scope"], "unscoped");
        assert_eq!(package["description"], "");
    }
}
