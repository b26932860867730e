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
}

impl Route {
    /// The group (function) that owns this route.
    pub fn group(&self) -> RouteGroup {
        match self {
            Route::Ping | Route::Search | Route::AdvisoriesBulk | Route::AuditsQuick => {
                RouteGroup::Metadata
            }
            Route::Packument(_) | Route::VersionOrTag(..) | Route::DistTags(_) => {
                RouteGroup::Metadata
            }
            Route::Tarball(..) => RouteGroup::Tarball,
            Route::DistTagSet(..) | Route::DistTagDelete(..) => RouteGroup::Publish,
            Route::PutPackage(..) | Route::DeletePackage(..) | Route::DeleteTarball(..) => {
                RouteGroup::Publish
            }
            Route::Whoami | Route::LegacyLogin(_) | Route::WebLogin => RouteGroup::Auth,
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
        ["-", "whoami"] => only(&Method::GET, Route::Whoami),
        ["-", "v1", "search"] => only(&Method::GET, Route::Search),
        ["-", "v1", "login"] => only(&Method::POST, Route::WebLogin),
        ["-", "npm", "v1", "security", "advisories", "bulk"] => {
            only(&Method::POST, Route::AdvisoriesBulk)
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
                ([t], _) if t == "dist-tags" => Err(RouteError::MethodNotAllowed),
                ([t, tag], &Method::PUT | &Method::POST) if t == "dist-tags" => {
                    Ok(Route::DistTagSet(name, tag.clone()))
                }
                ([t, tag], &Method::DELETE) if t == "dist-tags" => {
                    Ok(Route::DistTagDelete(name, tag.clone()))
                }
                ([t, _], _) if t == "dist-tags" => Err(RouteError::MethodNotAllowed),
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
        assert_eq!(resolve(&Method::GET, "/-/ping"), Ok(Route::Ping));
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
