//! The route table: which method and path is which operation, and which route group (Lambda
//! function) owns it. `/@scope/name` and `/name/version` have the same shape; a leading `@` tells
//! them apart. npm escapes a scoped name's slash (`@scope%2fname`, `%40scope%2Fname`); other clients
//! do not: both are accepted.

use axum::http::Method;
use percent_encoding::percent_decode_str;

use crate::domain::{NameError, PackageName};

/// The four route groups, one per Lambda function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteGroup {
    /// Packuments, versions, dist-tag reads, ping, audit.
    Metadata,
    /// Publish, unpublish, deprecate, dist-tag writes, stars.
    Publish,
    /// Tarball downloads.
    Tarball,
    /// Login, whoami, tokens.
    Auth,
}

impl RouteGroup {
    /// Every group, as the local server mounts them.
    pub const ALL: [RouteGroup; 4] = [
        RouteGroup::Metadata,
        RouteGroup::Publish,
        RouteGroup::Tarball,
        RouteGroup::Auth,
    ];
}

/// A recognised request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /-/ping`.
    Ping,
    /// `GET /-/ready`: whether storage can take writes.
    Ready,
    /// `GET /-/whoami`.
    Whoami,
    /// `GET /-/v1/search`.
    Search,
    /// `POST /-/npm/v1/security/advisories/bulk`.
    AdvisoriesBulk,
    /// `POST /-/npm/v1/security/audits/quick`.
    AuditsQuick,
    /// `GET /NAME`.
    Packument(PackageName),
    /// `GET /NAME/VERSION` or `GET /NAME/TAG`.
    VersionOrTag(PackageName, String),
    /// `GET /NAME/-/FILE.tgz`.
    Tarball(PackageName, String),
    /// `GET /-/package/NAME/dist-tags`.
    DistTags(PackageName),
    /// `PUT /-/package/NAME/dist-tags/TAG`.
    DistTagSet(PackageName, String),
    /// `DELETE /-/package/NAME/dist-tags/TAG`.
    DistTagDelete(PackageName, String),
    /// `PUT /NAME` (publish or metadata update) and `PUT /NAME/-rev/REV`.
    PutPackage(PackageName, Option<String>),
    /// `DELETE /NAME/-rev/REV`: unpublish every version.
    DeletePackage(PackageName, String),
    /// `DELETE /NAME/-/FILE.tgz/-rev/REV`: remove an unpublished version's tarball.
    DeleteTarball(PackageName, String, String),
    /// `PUT /-/user/org.couchdb.user:NAME`: legacy `npm login`.
    LegacyLogin(String),
    /// `POST /-/v1/login`: web login.
    WebLogin,
    /// `GET /-/npm/v1/tokens`: `npm token list`.
    TokensList,
    /// `POST /-/npm/v1/tokens`: `npm token create`.
    TokenCreate,
    /// `DELETE /-/npm/v1/tokens/token/KEY`: `npm token revoke`.
    TokenDelete(String),
    /// `POST /-/npm/v1/oidc/token/exchange/package/NAME`: trusted publishing's exchange.
    OidcExchange(PackageName),
    /// `GET /-/package/NAME/visibility`: whether the package's repository is public.
    Visibility(PackageName),
    /// `GET /-/package/NAME/trust`: `npm trust list`.
    TrustList(PackageName),
    /// `POST /-/package/NAME/trust`: `npm trust github`.
    TrustCreate(PackageName),
    /// `DELETE /-/package/NAME/trust/ID`: `npm trust revoke`.
    TrustRevoke(PackageName, String),
}

impl Route {
    /// The group (function) that owns this route.
    pub fn group(&self) -> RouteGroup {
        match self {
            Route::Ping
            | Route::Ready
            | Route::Search
            | Route::AdvisoriesBulk
            | Route::AuditsQuick => RouteGroup::Metadata,
            Route::Packument(_)
            | Route::VersionOrTag(..)
            | Route::DistTags(_)
            | Route::Visibility(_) => RouteGroup::Metadata,
            Route::Tarball(..) => RouteGroup::Tarball,
            Route::DistTagSet(..) | Route::DistTagDelete(..) => RouteGroup::Publish,
            Route::PutPackage(..) | Route::DeletePackage(..) | Route::DeleteTarball(..) => {
                RouteGroup::Publish
            }
            Route::Whoami | Route::LegacyLogin(_) | Route::WebLogin => RouteGroup::Auth,
            Route::TokensList | Route::TokenCreate | Route::TokenDelete(_) => RouteGroup::Auth,
            Route::OidcExchange(_) => RouteGroup::Auth,
            // Configuring binds a name to a repository (a package write), so the function
            // that may write packages owns these; the auth function may not touch them.
            Route::TrustList(_) | Route::TrustCreate(_) | Route::TrustRevoke(..) => {
                RouteGroup::Publish
            }
        }
    }
}

/// Why a request matches no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No route has this path.
    NotFound,
    /// The path exists but not with this method.
    MethodNotAllowed,
    /// The path names an invalid package.
    BadName(String, NameError),
    /// The path is not valid percent-encoded UTF-8.
    BadEncoding,
}

/// Splits a raw (still percent-encoded) path into decoded segments. A trailing slash is ignored.
fn segments(raw_path: &str) -> Result<Vec<String>, RouteError> {
    let trimmed = raw_path.strip_prefix('/').unwrap_or(raw_path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    trimmed
        .split('/')
        .map(|s| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| RouteError::BadEncoding)
        })
        .collect()
}

/// Takes a package name off the front of `segs`: `name`, `@scope/name` (escaped, one segment) or
/// `@scope` + `name` (two segments). Returns the name and the remaining segments.
fn take_name(segs: &[String]) -> Result<(PackageName, &[String]), RouteError> {
    let first = segs.first().ok_or(RouteError::NotFound)?;
    let (text, rest) = if first.starts_with('@') && !first.contains('/') {
        let second = segs
            .get(1)
            .ok_or_else(|| RouteError::BadName(first.clone(), NameError::BadScope))?;
        (format!("{first}/{second}"), &segs[2..])
    } else {
        (first.clone(), &segs[1..])
    };
    let name = PackageName::parse(&text).map_err(|e| RouteError::BadName(text, e))?;
    Ok((name, rest))
}

/// Resolves a method and a path (with any public-URL prefix already removed).
pub fn resolve(method: &Method, raw_path: &str) -> Result<Route, RouteError> {
    let segs = segments(raw_path)?;
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = method;
    let only = |allowed: &Method, route: Route| {
        if m == allowed {
            Ok(route)
        } else {
            Err(RouteError::MethodNotAllowed)
        }
    };
    match s.as_slice() {
        [] => Err(RouteError::NotFound),
        ["-", "ping"] => only(&Method::GET, Route::Ping),
        ["-", "ready"] => only(&Method::GET, Route::Ready),
        ["-", "whoami"] => only(&Method::GET, Route::Whoami),
        ["-", "v1", "search"] => only(&Method::GET, Route::Search),
        ["-", "v1", "login"] => only(&Method::POST, Route::WebLogin),
        ["-", "npm", "v1", "security", "advisories", "bulk"] => {
            only(&Method::POST, Route::AdvisoriesBulk)
        }
        ["-", "npm", "v1", "tokens"] => match *m {
            Method::GET => Ok(Route::TokensList),
            Method::POST => Ok(Route::TokenCreate),
            _ => Err(RouteError::MethodNotAllowed),
        },
        ["-", "npm", "v1", "tokens", "token", key] => {
            only(&Method::DELETE, Route::TokenDelete(key.to_string()))
        }
        ["-", "npm", "v1", "oidc", "token", "exchange", "package", ..] => {
            let (name, rest) = take_name(&segs[7..])?;
            if !rest.is_empty() {
                return Err(RouteError::NotFound);
            }
            only(&Method::POST, Route::OidcExchange(name))
        }
        ["-", "npm", "v1", "security", "audits", "quick"] => {
            only(&Method::POST, Route::AuditsQuick)
        }
        ["-", "user", user] if user.starts_with("org.couchdb.user:") => only(
            &Method::PUT,
            Route::LegacyLogin(user["org.couchdb.user:".len()..].to_string()),
        ),
        ["-", "package", ..] => {
            let (name, rest) = take_name(&segs[2..])?;
            match (rest, m) {
                ([t], &Method::GET) if t == "dist-tags" => Ok(Route::DistTags(name)),
                ([t], &Method::GET) if t == "visibility" => Ok(Route::Visibility(name)),
                ([t], _) if t == "visibility" => Err(RouteError::MethodNotAllowed),
                ([t], _) if t == "dist-tags" => Err(RouteError::MethodNotAllowed),
                ([t, tag], &Method::PUT | &Method::POST) if t == "dist-tags" => {
                    Ok(Route::DistTagSet(name, tag.clone()))
                }
                ([t, tag], &Method::DELETE) if t == "dist-tags" => {
                    Ok(Route::DistTagDelete(name, tag.clone()))
                }
                ([t, _], _) if t == "dist-tags" => Err(RouteError::MethodNotAllowed),
                ([t], &Method::GET) if t == "trust" => Ok(Route::TrustList(name)),
                ([t], &Method::POST) if t == "trust" => Ok(Route::TrustCreate(name)),
                ([t], _) if t == "trust" => Err(RouteError::MethodNotAllowed),
                ([t, id], &Method::DELETE) if t == "trust" => {
                    Ok(Route::TrustRevoke(name, id.clone()))
                }
                ([t, _], _) if t == "trust" => Err(RouteError::MethodNotAllowed),
                _ => Err(RouteError::NotFound),
            }
        }
        ["-", ..] => Err(RouteError::NotFound),
        _ => {
            let (name, rest) = take_name(&segs)?;
            let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
            match (rest.as_slice(), m) {
                ([], &Method::GET | &Method::HEAD) => Ok(Route::Packument(name)),
                ([], &Method::PUT) => Ok(Route::PutPackage(name, None)),
                ([], _) => Err(RouteError::MethodNotAllowed),
                (["-rev", rev], &Method::PUT) => Ok(Route::PutPackage(name, Some(rev.to_string()))),
                (["-rev", rev], &Method::DELETE) => Ok(Route::DeletePackage(name, rev.to_string())),
                (["-rev", _], _) => Err(RouteError::MethodNotAllowed),
                (["-", file], &Method::GET | &Method::HEAD) => {
                    Ok(Route::Tarball(name, file.to_string()))
                }
                (["-", _], _) => Err(RouteError::MethodNotAllowed),
                (["-", file, "-rev", rev], &Method::DELETE) => Ok(Route::DeleteTarball(
                    name,
                    file.to_string(),
                    rev.to_string(),
                )),
                (["-", _, "-rev", _], _) => Err(RouteError::MethodNotAllowed),
                ([spec], &Method::GET | &Method::HEAD) if !spec.starts_with('-') => {
                    Ok(Route::VersionOrTag(name, spec.to_string()))
                }
                ([spec], _) if !spec.starts_with('-') => Err(RouteError::MethodNotAllowed),
                _ => Err(RouteError::NotFound),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> PackageName {
        PackageName::parse(n).unwrap()
    }

    #[test]
    fn scoped_names_in_every_encoding() {
        for p in ["/@s%2fn", "/@s%2Fn", "/%40s%2fn", "/@s/n", "/@s/n/"] {
            assert_eq!(
                resolve(&Method::GET, p),
                Ok(Route::Packument(name("@s/n"))),
                "{p}"
            );
        }
        assert_eq!(
            resolve(&Method::GET, "/@s/n/1.0.0"),
            Ok(Route::VersionOrTag(name("@s/n"), "1.0.0".into()))
        );
        assert_eq!(
            resolve(&Method::GET, "/@s%2fn/latest"),
            Ok(Route::VersionOrTag(name("@s/n"), "latest".into()))
        );
        assert_eq!(
            resolve(&Method::GET, "/n/1.0.0"),
            Ok(Route::VersionOrTag(name("n"), "1.0.0".into()))
        );
        assert_eq!(
            resolve(&Method::GET, "/@s/n/-/n-1.0.0.tgz"),
            Ok(Route::Tarball(name("@s/n"), "n-1.0.0.tgz".into()))
        );
        assert_eq!(
            resolve(&Method::GET, "/@s%2fn/-/n-1.0.0.tgz")
                .unwrap()
                .group(),
            RouteGroup::Tarball
        );
    }

    #[test]
    fn writes_and_special_routes() {
        assert_eq!(
            resolve(&Method::PUT, "/@s%2fn"),
            Ok(Route::PutPackage(name("@s/n"), None))
        );
        assert_eq!(
            resolve(&Method::PUT, "/n/-rev/3-ab"),
            Ok(Route::PutPackage(name("n"), Some("3-ab".into())))
        );
        assert_eq!(
            resolve(&Method::DELETE, "/n/-rev/3-ab"),
            Ok(Route::DeletePackage(name("n"), "3-ab".into()))
        );
        assert_eq!(
            resolve(&Method::DELETE, "/@s/n/-/n-1.0.0.tgz/-rev/3"),
            Ok(Route::DeleteTarball(
                name("@s/n"),
                "n-1.0.0.tgz".into(),
                "3".into()
            ))
        );
        assert_eq!(
            resolve(&Method::GET, "/-/package/@s%2fn/dist-tags"),
            Ok(Route::DistTags(name("@s/n")))
        );
        assert_eq!(
            resolve(&Method::PUT, "/-/package/@s/n/dist-tags/beta"),
            Ok(Route::DistTagSet(name("@s/n"), "beta".into()))
        );
        assert_eq!(
            resolve(&Method::POST, "/-/package/@s%2fn/trust"),
            Ok(Route::TrustCreate(name("@s/n")))
        );
        assert_eq!(
            resolve(&Method::GET, "/-/package/@s/n/trust"),
            Ok(Route::TrustList(name("@s/n")))
        );
        assert_eq!(
            resolve(&Method::DELETE, "/-/package/%40s%2Fn/trust/ab12"),
            Ok(Route::TrustRevoke(name("@s/n"), "ab12".into()))
        );
        assert_eq!(
            resolve(&Method::PUT, "/-/package/@s/n/trust"),
            Err(RouteError::MethodNotAllowed)
        );
        assert_eq!(resolve(&Method::GET, "/-/ping"), Ok(Route::Ping));
        for p in [
            "/-/npm/v1/oidc/token/exchange/package/@s%2fn",
            "/-/npm/v1/oidc/token/exchange/package/@s/n",
        ] {
            assert_eq!(
                resolve(&Method::POST, p),
                Ok(Route::OidcExchange(name("@s/n")))
            );
        }
        assert_eq!(
            resolve(&Method::GET, "/-/npm/v1/oidc/token/exchange/package/@s%2fn"),
            Err(RouteError::MethodNotAllowed)
        );
        assert_eq!(
            resolve(&Method::GET, "/-/package/@s%2fn/visibility"),
            Ok(Route::Visibility(name("@s/n")))
        );
        assert_eq!(resolve(&Method::GET, "/-/ready"), Ok(Route::Ready));
        assert_eq!(
            resolve(&Method::PUT, "/-/user/org.couchdb.user:bob"),
            Ok(Route::LegacyLogin("bob".into()))
        );
        assert_eq!(
            resolve(&Method::POST, "/n"),
            Err(RouteError::MethodNotAllowed)
        );
        assert_eq!(resolve(&Method::GET, "/-/nope"), Err(RouteError::NotFound));
    }

    #[test]
    fn hostile_paths_are_refused() {
        for p in [
            "/..%2f..%2fetc",
            "/@s%2f..%2fx",
            "/%2e%2e",
            "/@s",
            "/a%2fb",
            "/%ff",
        ] {
            assert!(resolve(&Method::GET, p).is_err(), "{p}");
        }
    }
}

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
    spec("GET", "/-/whoami", A),
    spec("POST", "/-/v1/login", A),
    spec("PUT", "/-/user/{user}", A),
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
    ("PUT", "/-/user/org.couchdb.user:bob"),
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
];

#[cfg(test)]
mod table_tests {
    use super::*;

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
