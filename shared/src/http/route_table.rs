//! The API Gateway route table: every method and path pattern the registry answers and the
//! function that owns it, and API Gateway's rule for picking a row. The deployment template is
//! generated from (and checked against) this table; the tests below and the fuzz target check it
//! against the route parser (`routes::resolve`). No I/O: the fuzz crate compiles this file too.

use super::routes::RouteGroup;

/// One row of the route table: an API Gateway HTTP API route (`{var}` matches one path segment)
/// and the function that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// HTTP method.
    pub method: &'static str,
    /// Path pattern in API Gateway syntax.
    pub path: &'static str,
    /// The owning function.
    pub group: RouteGroup,
}

const fn spec(method: &'static str, path: &'static str, group: RouteGroup) -> RouteSpec {
    RouteSpec {
        method,
        path,
        group,
    }
}

use RouteGroup::{Auth as A, Metadata as M, Publish as P, Tarball as T};

/// The route table: every method and path pattern the registry answers, and which function owns
/// it. The deployment template is generated from (and checked against) this table. Scoped names
/// arrive either escaped in one segment (`/@s%2fn` matches `/{package}`) or as two segments
/// (`/@s/n` matches `/{scope}/{package}`); `/name/version` has the same shape as `/@scope/name`
/// and both belong to the metadata function, which tells them apart by the leading `@`.
pub const ROUTE_TABLE: &[RouteSpec] = &[
    spec("GET", "/-/ping", M),
    spec("GET", "/-/ready", M),
    spec("GET", "/-/v1/search", M),
    spec("POST", "/-/npm/v1/security/advisories/bulk", M),
    spec("POST", "/-/npm/v1/security/audits/quick", M),
    spec("GET", "/-/package/{package}/dist-tags", M),
    spec("GET", "/-/package/{scope}/{package}/dist-tags", M),
    spec("PUT", "/-/package/{package}/dist-tags/{tag}", P),
    spec("PUT", "/-/package/{scope}/{package}/dist-tags/{tag}", P),
    spec("POST", "/-/package/{package}/dist-tags/{tag}", P),
    spec("POST", "/-/package/{scope}/{package}/dist-tags/{tag}", P),
    spec("DELETE", "/-/package/{package}/dist-tags/{tag}", P),
    spec("DELETE", "/-/package/{scope}/{package}/dist-tags/{tag}", P),
    spec("GET", "/-/package/{package}/visibility", M),
    spec("GET", "/-/package/{scope}/{package}/visibility", M),
    spec("POST", "/-/npm/v1/oidc/token/exchange/package/{package}", A),
    spec(
        "POST",
        "/-/npm/v1/oidc/token/exchange/package/{scope}/{package}",
        A,
    ),
    spec("GET", "/-/package/{package}/trust", P),
    spec("GET", "/-/package/{scope}/{package}/trust", P),
    spec("POST", "/-/package/{package}/trust", P),
    spec("POST", "/-/package/{scope}/{package}/trust", P),
    spec("DELETE", "/-/package/{package}/trust/{id}", P),
    spec("DELETE", "/-/package/{scope}/{package}/trust/{id}", P),
    spec("GET", "/-/package/{package}/origin", P),
    spec("GET", "/-/package/{scope}/{package}/origin", P),
    spec("PUT", "/-/package/{package}/origin", P),
    spec("PUT", "/-/package/{scope}/{package}/origin", P),
    spec("GET", "/", M),
    spec("GET", "/-/web", M),
    spec("GET", "/-/web/search", M),
    spec("GET", "/-/web/package/{package}", M),
    spec("GET", "/-/web/package/{scope}/{package}", M),
    spec("GET", "/-/web/package/{package}/v/{version}", M),
    spec("GET", "/-/web/package/{scope}/{package}/v/{version}", M),
    spec("GET", "/-/web/static/{file}", M),
    spec("GET", "/-/web/login", A),
    spec("GET", "/-/web/callback", A),
    spec("POST", "/-/web/logout", A),
    spec("GET", "/-/v1/login/done", A),
    spec("GET", "/-/whoami", A),
    spec("POST", "/-/v1/login", A),
    spec("POST", "/_session", A),
    spec("PUT", "/-/user/{user}", A),
    // npm 1.3's adduser of an existing user, and `npm stars` (CouchDB's view).
    spec("GET", "/-/user/{user}", A),
    spec("PUT", "/-/user/{user}/-rev/{rev}", A),
    spec("GET", "/-/_view/starredByUser", M),
    spec("GET", "/-/npm/v1/keys", M),
    spec("GET", "/-/npm/v1/attestations/{spec}", M),
    spec("GET", "/-/npm/v1/attestations/{scope}/{spec}", M),
    spec("GET", "/-/npm/v1/tokens", A),
    spec("POST", "/-/npm/v1/tokens", A),
    spec("DELETE", "/-/npm/v1/tokens/token/{key}", A),
    spec("GET", "/{package}", M),
    spec("HEAD", "/{package}", M),
    spec("GET", "/{scope}/{package}", M),
    spec("HEAD", "/{scope}/{package}", M),
    spec("GET", "/{scope}/{package}/{version}", M),
    spec("GET", "/{package}/-/{file}", T),
    spec("HEAD", "/{package}/-/{file}", T),
    spec("GET", "/{scope}/{package}/-/{file}", T),
    spec("HEAD", "/{scope}/{package}/-/{file}", T),
    spec("PUT", "/{package}", P),
    spec("PUT", "/{scope}/{package}", P),
    spec("PUT", "/{package}/-rev/{rev}", P),
    spec("PUT", "/{scope}/{package}/-rev/{rev}", P),
    // npm 1.x: PUT /NAME/TAG and PUT /NAME/VERSION (the unscoped forms are /{scope}/{package}
    // above), a release with its tag, and the upload before it.
    spec("PUT", "/{scope}/{package}/{tag}", P),
    spec("PUT", "/{package}/{version}/-tag/{tag}", P),
    spec("PUT", "/{scope}/{package}/{version}/-tag/{tag}", P),
    spec("PUT", "/{package}/-/{file}/-rev/{rev}", P),
    spec("PUT", "/{scope}/{package}/-/{file}/-rev/{rev}", P),
    spec("DELETE", "/{package}/-rev/{rev}", P),
    spec("DELETE", "/{scope}/{package}/-rev/{rev}", P),
    spec("DELETE", "/{package}/-/{file}/-rev/{rev}", P),
    spec("DELETE", "/{scope}/{package}/-/{file}/-rev/{rev}", P),
];

/// Picks the table row API Gateway would pick for a raw path.
pub fn match_route_table(method: &str, raw_path: &str) -> Option<&'static RouteSpec> {
    api_gateway_match(ROUTE_TABLE, method, raw_path, |r| (r.method, r.path))
}

/// API Gateway's choice among `routes` (HTTP API rules): same method and segment count, literal
/// segments must match, and at the first segment where candidates differ a literal beats a
/// variable. `key` gives a route's method and path pattern.
pub fn api_gateway_match<'a, T>(
    routes: &'a [T],
    method: &str,
    raw_path: &str,
    key: impl Fn(&T) -> (&str, &str),
) -> Option<&'a T> {
    let segments: Vec<&str> = raw_path.trim_start_matches('/').split('/').collect();
    routes
        .iter()
        .filter_map(|r| {
            let (m, path) = key(r);
            if m != method {
                return None;
            }
            let pattern: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            if pattern.len() != segments.len() {
                return None;
            }
            let mut score = Vec::with_capacity(pattern.len());
            for (p, s) in pattern.iter().zip(&segments) {
                if p.starts_with('{') {
                    if s.is_empty() {
                        return None; // a variable never matches an empty segment
                    }
                    score.push(0u8);
                } else if p == s {
                    score.push(1u8);
                } else {
                    return None;
                }
            }
            Some((score, r))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, r)| r)
}

/// Requests real clients send, in every encoding; each must reach the function that answers it.
pub const CLIENT_REQUESTS: &[(&str, &str)] = &[
    ("GET", "/-/ping"),
    ("GET", "/-/ready"),
    ("GET", "/-/whoami"),
    ("GET", "/-/v1/search"),
    ("POST", "/-/v1/login"),
    ("GET", "/-/v1/login/done"),
    ("GET", "/"),
    ("GET", "/-/web"),
    ("GET", "/-/web/search"),
    ("GET", "/-/web/package/@acme%2fwidget"),
    ("GET", "/-/web/package/@acme/widget"),
    ("GET", "/-/web/package/widget/v/1.0.0"),
    ("GET", "/-/web/package/@acme/widget/v/1.0.0"),
    ("GET", "/-/web/static/style.css"),
    ("GET", "/-/web/login"),
    ("GET", "/-/web/callback"),
    ("POST", "/-/web/logout"),
    ("PUT", "/-/user/org.couchdb.user:bob"),
    ("GET", "/-/user/org.couchdb.user:bob"),
    ("PUT", "/-/user/org.couchdb.user:bob/-rev/1-0"),
    ("GET", "/-/_view/starredByUser"),
    ("GET", "/-/npm/v1/keys"),
    ("GET", "/-/npm/v1/attestations/plain@1.0.0"),
    ("GET", "/-/npm/v1/attestations/@s%2fn@1.0.0"),
    ("GET", "/-/npm/v1/attestations/@s/n@1.0.0"),
    ("PUT", "/%2540acme%252Fwidgets"),
    ("PUT", "/%2540acme%252Fwidgets/1.0.0/-tag/latest"),
    (
        "PUT",
        "/%2540acme%252Fwidgets/-/%2540acme%252Fwidgets-1.0.0.tgz/-rev/1-0",
    ),
    ("GET", "/-/npm/v1/tokens"),
    ("POST", "/-/npm/v1/tokens"),
    ("DELETE", "/-/npm/v1/tokens/token/0123abcd"),
    ("POST", "/-/npm/v1/oidc/token/exchange/package/@s%2fn"),
    ("POST", "/-/npm/v1/oidc/token/exchange/package/@s/n"),
    ("POST", "/-/npm/v1/oidc/token/exchange/package/plain"),
    ("GET", "/-/package/@s%2fn/visibility"),
    ("GET", "/-/package/@s/n/visibility"),
    ("POST", "/-/npm/v1/security/advisories/bulk"),
    ("POST", "/-/npm/v1/security/audits/quick"),
    ("GET", "/-/package/@s%2fn/dist-tags"),
    ("GET", "/-/package/@s/n/dist-tags"),
    ("GET", "/-/package/plain/dist-tags"),
    ("PUT", "/-/package/@s%2fn/dist-tags/beta"),
    ("PUT", "/-/package/@s/n/dist-tags/beta"),
    ("PUT", "/-/package/plain/dist-tags/beta"),
    ("POST", "/-/package/plain/dist-tags/beta"),
    ("POST", "/-/package/@s/n/dist-tags/beta"),
    ("DELETE", "/-/package/plain/dist-tags/beta"),
    ("DELETE", "/-/package/@s/n/dist-tags/beta"),
    ("DELETE", "/-/package/@s%2fn/dist-tags/beta"),
    ("GET", "/plain"),
    ("HEAD", "/plain"),
    ("GET", "/@s%2fn"),
    ("GET", "/@s%2Fn"),
    ("GET", "/%40s%2fn"),
    ("GET", "/@s/n"),
    ("HEAD", "/@s/n"),
    ("GET", "/plain/1.0.0"),
    ("GET", "/plain/latest"),
    ("GET", "/@s/n/1.0.0"),
    ("GET", "/@s%2fn/1.0.0"),
    ("GET", "/plain/-/plain-1.0.0.tgz"),
    ("HEAD", "/plain/-/plain-1.0.0.tgz"),
    ("GET", "/@s/n/-/n-1.0.0.tgz"),
    ("HEAD", "/@s/n/-/n-1.0.0.tgz"),
    ("GET", "/@s%2fn/-/n-1.0.0.tgz"),
    ("PUT", "/plain"),
    ("PUT", "/@s%2fn"),
    ("PUT", "/@s/n"),
    ("PUT", "/@s%2fn/-rev/3-abc"),
    ("PUT", "/@s/n/-rev/3-abc"),
    ("DELETE", "/plain/-rev/3-abc"),
    ("DELETE", "/@s/n/-rev/3-abc"),
    ("DELETE", "/plain/-/plain-1.0.0.tgz/-rev/3-abc"),
    ("DELETE", "/@s/n/-/n-1.0.0.tgz/-rev/3-abc"),
    ("DELETE", "/@s%2fn/-/n-1.0.0.tgz/-rev/3-abc"),
    ("GET", "/-/package/@s%2fn/trust"),
    ("GET", "/-/package/@s/n/trust"),
    ("POST", "/-/package/@s%2fn/trust"),
    ("POST", "/-/package/@s/n/trust"),
    (
        "DELETE",
        "/-/package/@s%2fn/trust/0f1e2d3c-aaaa-bbbb-cccc-111122223333",
    ),
    (
        "DELETE",
        "/-/package/@s/n/trust/0f1e2d3c-aaaa-bbbb-cccc-111122223333",
    ),
    ("POST", "/-/package/@s%2fn/dist-tags/trust"),
    ("POST", "/_session"),
    ("PUT", "/left-pad/stable"),
    ("PUT", "/left-pad/1.0.0"),
    ("PUT", "/left-pad/1.0.0/-tag/latest"),
    ("PUT", "/@s/n/1.0.0/-tag/latest"),
    ("PUT", "/left-pad/-/left-pad-1.0.0.tgz/-rev/2-abc"),
    ("PUT", "/@s/n/-/n-1.0.0.tgz/-rev/2-abc"),
    ("PUT", "/@s/n/stable"),
    ("GET", "/-/package/left-pad/origin"),
    ("GET", "/-/package/@s%2fn/origin"),
    ("GET", "/-/package/@s/n/origin"),
    ("PUT", "/-/package/left-pad/origin"),
    ("PUT", "/-/package/@s/n/origin"),
];

#[cfg(test)]
mod tests {
    use super::super::routes::resolve;
    use super::*;
    use axum::http::Method;

    const SAMPLES: &[(&str, &str)] = CLIENT_REQUESTS;

    #[test]
    fn the_table_sends_every_request_to_the_function_that_answers_it() {
        for (method, path) in SAMPLES {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let route = resolve(&m, path).unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
            let row = match_route_table(method, path)
                .unwrap_or_else(|| panic!("no table row for {method} {path}"));
            assert_eq!(row.group, route.group(), "{method} {path} matched {row:?}");
        }
    }

    #[test]
    fn every_row_is_reachable() {
        for row in ROUTE_TABLE {
            assert!(
                SAMPLES
                    .iter()
                    .any(|(m, p)| *m == row.method && match_route_table(m, p) == Some(row)),
                "no sample request reaches {row:?}"
            );
        }
    }
}
