//! The route parser: which method and path is which operation, grouped by the route group (Lambda
//! function) that owns it, with the path's parameters parsed into typed values at the edge.
//! `/@scope/name` and `/name/version` have the same shape; a leading `@` tells them apart. npm
//! escapes a scoped name's slash (`@scope%2fname`, `%40scope%2Fname`); other clients do not: both
//! are accepted. No I/O here: the fuzz crate compiles this file on its own (shared/fuzz).

use std::fmt;

use axum::http::Method;
use percent_encoding::percent_decode_str;
use semver::Version;

use crate::domain::publish::parse_version;
use crate::domain::{DistTag, NameError, PackageName, TagError};

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

/// A recognised request, by the group (function) that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Reads of packages and the registry's own endpoints.
    Metadata(MetadataRoute),
    /// Package writes and trust configurations.
    Publish(PublishRoute),
    /// Tarball downloads.
    Tarball(TarballRoute),
    /// Sign-in, tokens and the trusted-publishing exchange.
    Auth(AuthRoute),
}

/// The metadata group's routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRoute {
    /// `GET /-/ping`.
    Ping,
    /// `GET /-/ready`: whether storage can take writes.
    Ready,
    /// `GET /-/v1/search`.
    Search,
    /// `GET /-/npm/v1/keys`: the public keys of the registry's signatures.
    SigningKeys,
    /// `GET /-/npm/v1/attestations/NAME@VERSION`: a version's provenance bundle.
    Attestations {
        /// The package.
        name: PackageName,
        /// The version.
        version: Version,
    },
    /// `GET /-/_view/starredByUser?key="USER"`: CouchDB's view of the packages a user starred
    /// (`npm stars` of npm 1.x).
    StarredByUser,
    /// `POST /-/npm/v1/security/advisories/bulk`.
    AdvisoriesBulk,
    /// `POST /-/npm/v1/security/audits/quick`.
    AuditsQuick,
    /// `GET /NAME`.
    Packument {
        /// The package.
        name: PackageName,
    },
    /// `GET /NAME/VERSION` or `GET /NAME/TAG`.
    VersionOrTag {
        /// The package.
        name: PackageName,
        /// A version or a dist-tag, as the client wrote it.
        spec: String,
    },
    /// `GET /-/package/NAME/dist-tags`.
    DistTags {
        /// The package.
        name: PackageName,
    },
    /// `GET /-/package/NAME/visibility`: whether the package's repository is public.
    Visibility {
        /// The package.
        name: PackageName,
    },
    /// `GET /`: a browser is sent to the web pages; anything else hears 404.
    Root,
    /// `GET /-/web`: the package list (`?page=N`).
    WebList,
    /// `GET /-/web/search`: search results (`?q=TEXT&page=N`).
    WebSearch,
    /// `GET /-/web/package/NAME` and `/-/web/package/NAME/v/VERSION`: a package's page.
    WebPackage {
        /// The package.
        name: PackageName,
        /// The version shown (`latest` when absent).
        version: Option<Version>,
    },
    /// `GET /-/web/static/FILE`: the pages' stylesheet and script.
    WebStatic {
        /// The file name.
        file: String,
    },
}

/// The publish group's routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishRoute {
    /// `PUT /NAME` (publish or metadata update) and `PUT /NAME/-rev/REV`.
    Put {
        /// The package.
        name: PackageName,
        /// The revision the client last read, when it sent one.
        rev: Option<Revision>,
    },
    /// `DELETE /NAME/-rev/REV`: unpublish every version.
    Unpublish {
        /// The package.
        name: PackageName,
        /// The revision the client last read.
        rev: Revision,
    },
    /// `DELETE /NAME/-/FILE.tgz/-rev/REV`: remove an unpublished version's tarball.
    DeleteTarball {
        /// The package.
        name: PackageName,
        /// The tarball's file name.
        file: TarballFile,
        /// The revision the client last read (npm sends it; the answer does not depend on it).
        rev: Revision,
    },
    /// `PUT /-/package/NAME/dist-tags/TAG`.
    SetTag {
        /// The package.
        name: PackageName,
        /// The tag to point.
        tag: DistTag,
    },
    /// `DELETE /-/package/NAME/dist-tags/TAG`.
    DeleteTag {
        /// The package.
        name: PackageName,
        /// The tag to remove.
        tag: DistTag,
    },
    /// `GET /-/package/NAME/trust`: `npm trust list`.
    TrustList {
        /// The package.
        name: PackageName,
    },
    /// `POST /-/package/NAME/trust`: `npm trust github`.
    TrustCreate {
        /// The package.
        name: PackageName,
    },
    /// `DELETE /-/package/NAME/trust/ID`: `npm trust revoke`.
    TrustRevoke {
        /// The package.
        name: PackageName,
        /// The configuration.
        id: TrustId,
    },
    /// `PUT /NAME/-/FILE.tgz/-rev/REV` (`application/octet-stream`): npm 1.x uploads a
    /// version's tarball before it creates the version (`Release`).
    UploadTarball {
        /// The package.
        name: PackageName,
        /// The tarball's file name.
        file: TarballFile,
    },
    /// `PUT /NAME/VERSION` and `PUT /NAME/VERSION/-tag/TAG`: npm 1.x creates a version from
    /// its manifest and the tarball uploaded before.
    Release {
        /// The package.
        name: PackageName,
        /// The version.
        version: Version,
        /// The tag to point at it, if any.
        tag: Option<DistTag>,
    },
    /// `GET /-/package/NAME/origin`: the name's origin and why (admins).
    OriginGet {
        /// The package name.
        name: PackageName,
    },
    /// `PUT /-/package/NAME/origin` with `{"origin": "internal" | "upstream"}` (admins).
    OriginSet {
        /// The package name.
        name: PackageName,
    },
}

/// The tarball group's routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarballRoute {
    /// `GET /NAME/-/FILE.tgz`.
    Download {
        /// The package.
        name: PackageName,
        /// The tarball's file name.
        file: TarballFile,
    },
}

/// The auth group's routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRoute {
    /// `GET /-/whoami`.
    Whoami,
    /// `POST /-/v1/login`: web login.
    WebLogin,
    /// `PUT /-/user/org.couchdb.user:NAME`: legacy `npm login`.
    LegacyLogin {
        /// The user name from the path.
        user: String,
    },
    /// `POST /_session` (`{name, password}`): npm 1.x's cookie login, CouchDB's session API.
    Session,
    /// `GET /-/user/org.couchdb.user:NAME`: the user document npm 1.3 reads after a 409.
    LegacyUser {
        /// The user name from the path.
        user: String,
    },
    /// `PUT /-/user/org.couchdb.user:NAME/-rev/REV`: npm 1.3's update of an existing user,
    /// sent with the credentials (Basic or its session) that prove the password.
    LegacyUserUpdate {
        /// The user name from the path.
        user: String,
    },
    /// `GET /-/npm/v1/tokens`: `npm token list`.
    TokensList,
    /// `POST /-/npm/v1/tokens`: `npm token create`.
    TokenCreate,
    /// `DELETE /-/npm/v1/tokens/token/KEY`: `npm token revoke`.
    TokenDelete {
        /// A token's key, or a whole token.
        key: TokenKey,
    },
    /// `POST /-/npm/v1/oidc/token/exchange/package/NAME`: trusted publishing's exchange.
    OidcExchange {
        /// The package the token is asked for.
        name: PackageName,
    },
    /// `GET /-/v1/login/done?session=SECRET`: npm polls a web login until it has its token.
    WebLoginDone,
    /// `GET /-/web/login`: off to GitHub to sign in (`?session=` for an npm web login).
    WebSignIn,
    /// `GET /-/web/callback`: back from GitHub with a code.
    WebCallback,
    /// `POST /-/web/logout`: ends the browser's session.
    WebSignOut,
}

/// How large a route's request body may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteLimit {
    /// A publish or metadata update: `REGISTRY_MAX_BODY_BYTES`.
    Publish,
    /// Login, token and dist-tag bodies: a few KiB.
    Small,
    /// npm's bulk advisory request: every installed name and version, gzipped.
    Audit,
}

/// What dispatch needs to know of a request before its handler runs (also of one whose
/// parameters were refused, so that it is refused in the same order as before, see `Rejected`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTraits {
    /// The owning group.
    pub group: RouteGroup,
    /// Whether it changes something (needs a caller who may write, in GitHub mode).
    pub writes: bool,
    /// Its body limit, `None` for routes that never read a body.
    pub body: Option<RouteLimit>,
    /// Whether it signs in: its bearer, if any, is not (yet) a credential of this registry.
    pub signs_in: bool,
    /// Whether it is a web page's: the caller is the browser's session cookie, not a bearer.
    pub web: bool,
}

impl Route {
    /// The group (function) that owns this route.
    pub fn group(&self) -> RouteGroup {
        match self {
            Route::Metadata(_) => RouteGroup::Metadata,
            Route::Publish(_) => RouteGroup::Publish,
            Route::Tarball(_) => RouteGroup::Tarball,
            Route::Auth(_) => RouteGroup::Auth,
        }
    }

    /// The package the route names, if any.
    pub fn package(&self) -> Option<&PackageName> {
        match self {
            Route::Metadata(
                MetadataRoute::Packument { name }
                | MetadataRoute::Attestations { name, .. }
                | MetadataRoute::VersionOrTag { name, .. }
                | MetadataRoute::DistTags { name }
                | MetadataRoute::Visibility { name },
            )
            | Route::Publish(
                PublishRoute::Put { name, .. }
                | PublishRoute::Unpublish { name, .. }
                | PublishRoute::DeleteTarball { name, .. }
                | PublishRoute::SetTag { name, .. }
                | PublishRoute::DeleteTag { name, .. }
                | PublishRoute::TrustList { name }
                | PublishRoute::TrustCreate { name }
                | PublishRoute::TrustRevoke { name, .. }
                | PublishRoute::OriginGet { name }
                | PublishRoute::OriginSet { name }
                | PublishRoute::UploadTarball { name, .. }
                | PublishRoute::Release { name, .. },
            )
            | Route::Tarball(TarballRoute::Download { name, .. })
            | Route::Auth(AuthRoute::OidcExchange { name }) => Some(name),
            Route::Metadata(
                MetadataRoute::Ping
                | MetadataRoute::Ready
                | MetadataRoute::Search
                | MetadataRoute::StarredByUser
                | MetadataRoute::SigningKeys
                | MetadataRoute::AdvisoriesBulk
                | MetadataRoute::AuditsQuick
                | MetadataRoute::Root
                | MetadataRoute::WebList
                | MetadataRoute::WebSearch
                | MetadataRoute::WebPackage { .. }
                | MetadataRoute::WebStatic { .. },
            )
            | Route::Auth(
                AuthRoute::Whoami
                | AuthRoute::WebLogin
                | AuthRoute::LegacyLogin { .. }
                | AuthRoute::LegacyUser { .. }
                | AuthRoute::LegacyUserUpdate { .. }
                | AuthRoute::Session
                | AuthRoute::TokensList
                | AuthRoute::TokenCreate
                | AuthRoute::TokenDelete { .. }
                | AuthRoute::WebLoginDone
                | AuthRoute::WebSignIn
                | AuthRoute::WebCallback
                | AuthRoute::WebSignOut,
            ) => None,
        }
    }

    /// What dispatch needs before the handler runs.
    pub fn traits(&self) -> RouteTraits {
        // Every publish-group route writes (trust configurations bind names: a package write);
        // of the auth group, token management does.
        let writes = match self {
            Route::Publish(_) => true,
            Route::Auth(route) => matches!(
                route,
                AuthRoute::TokenCreate | AuthRoute::TokenDelete { .. }
            ),
            Route::Metadata(_) | Route::Tarball(_) => false,
        };
        let body = match self {
            Route::Publish(
                PublishRoute::Put { .. }
                | PublishRoute::UploadTarball { .. }
                | PublishRoute::Release { .. },
            ) => Some(RouteLimit::Publish),
            Route::Metadata(MetadataRoute::AdvisoriesBulk) => Some(RouteLimit::Audit),
            Route::Publish(
                PublishRoute::SetTag { .. }
                | PublishRoute::TrustCreate { .. }
                | PublishRoute::OriginSet { .. },
            )
            | Route::Auth(
                AuthRoute::LegacyLogin { .. }
                | AuthRoute::LegacyUserUpdate { .. }
                | AuthRoute::Session
                | AuthRoute::TokenCreate,
            ) => Some(RouteLimit::Small),
            _ => None,
        };
        let signs_in = matches!(
            self,
            Route::Auth(
                AuthRoute::LegacyLogin { .. }
                    | AuthRoute::Session
                    | AuthRoute::WebLogin
                    | AuthRoute::OidcExchange { .. }
                    | AuthRoute::WebLoginDone
                    | AuthRoute::WebSignIn
                    | AuthRoute::WebCallback
            )
        );
        let web = matches!(
            self,
            Route::Metadata(
                MetadataRoute::WebList
                    | MetadataRoute::WebSearch
                    | MetadataRoute::WebPackage { .. }
            ) | Route::Auth(AuthRoute::WebSignOut)
        );
        RouteTraits {
            group: self.group(),
            writes,
            body,
            signs_in,
            web,
        }
    }
}

/// A package revision as a client names it (`/-rev/REV`): the `rev` it last read. Any text is
/// one: a revision that is not the current one (`999-stale`, `bogus`) is answered, after the
/// caller is authorised, as out of date, so an outsider learns nothing from its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision(String);

impl Revision {
    /// The revision named by a path segment.
    pub fn parse(text: &str) -> Self {
        Self(text.to_string())
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tarball file name (`<base name>-<version>.tgz`) and the version it carries, if it is one of
/// its package's. A name that is not is refused by the handler, after the caller is authorised:
/// which file names a package serves is told only to callers who may read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarballFile {
    text: String,
    version: Option<Version>,
}

impl TarballFile {
    /// Reads `file` as a tarball of `name`.
    pub fn parse(name: &PackageName, file: &str) -> Self {
        let version = file
            .strip_prefix(name.base_name())
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.strip_suffix(".tgz"))
            .and_then(|v| parse_version(v).ok());
        Self {
            text: file.to_string(),
            version,
        }
    }

    /// The version, when the name is a tarball of its package.
    pub fn version(&self) -> Option<&Version> {
        self.version.as_ref()
    }

    /// The file name as requested.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for TarballFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A trust configuration's id as the path names it; one that names no configuration of the
/// package is answered as not found, after the caller is authorised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustId(String);

impl TrustId {
    /// The id named by a path segment.
    pub fn parse(text: &str) -> Self {
        Self(text.to_string())
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrustId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `npm token revoke` puts in the path: a token's key, or (given one) a whole token. It may
/// be a secret, so it is never shown: `Debug` redacts it and it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey(String);

impl TokenKey {
    /// The key (or token) named by a path segment.
    pub fn parse(text: &str) -> Self {
        Self(text.to_string())
    }

    /// The text, for comparison with stored keys and for reading as a token.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(<redacted>)")
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
    /// The route exists but a parameter of its path is not valid.
    Rejected(Rejected),
}

/// A request for a known route whose path parameter is not valid. It is refused after the
/// request-line checks and the caller's identification that the route itself would get (an
/// anonymous write in GitHub mode hears that it must sign in, whatever its tag says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// What the route would have been.
    pub traits: RouteTraits,
    /// The package the path names.
    pub package: PackageName,
    /// The parameter as the path gave it.
    pub value: String,
    /// What is wrong.
    pub error: ParamError,
}

/// An invalid path parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// The dist-tag of a dist-tag write.
    #[error("invalid dist-tag: {0}")]
    SetTag(TagError),
    /// The dist-tag of a dist-tag removal.
    #[error("invalid dist-tag: {0}")]
    DeleteTag(TagError),
}

/// Splits a raw (still percent-encoded) path into decoded segments, copied only where decoding
/// changed them. A trailing slash is ignored.
fn segments(raw_path: &str) -> Result<Vec<std::borrow::Cow<'_, str>>, RouteError> {
    let trimmed = raw_path.strip_prefix('/').unwrap_or(raw_path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    trimmed
        .split('/')
        .map(|s| {
            let once = percent_decode_str(s)
                .decode_utf8()
                .map_err(|_| RouteError::BadEncoding)?;
            // npm 1.3 (npm-registry-client 0.2) escapes a scoped name twice on its publish
            // writes (`/%2540acme%252Fwidgets`). No name, version, tag or file name holds a `%`,
            // so a segment that still reads `%40…%2F…` after one decoding is decoded again.
            if is_escaped_scoped_name(&once) {
                let twice = percent_decode_str(&once)
                    .decode_utf8()
                    .map_err(|_| RouteError::BadEncoding)?
                    .into_owned();
                return Ok(std::borrow::Cow::Owned(twice));
            }
            Ok(once)
        })
        .collect()
}

/// Whether a once-decoded segment is a scoped name escaped once more (`%40scope%2Fname…`).
fn is_escaped_scoped_name(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    bytes.len() > 3
        && bytes[..3].eq_ignore_ascii_case(b"%40")
        && segment.to_ascii_lowercase().contains("%2f")
}

/// Takes a package name off the front of `segs`: `name`, `@scope/name` (escaped, one segment) or
/// `@scope` + `name` (two segments). Returns the name and the remaining segments.
fn take_name<'a, 'b>(segs: &'a [&'b str]) -> Result<(PackageName, &'a [&'b str]), RouteError> {
    let first = *segs.first().ok_or(RouteError::NotFound)?;
    if first.starts_with('@') && !first.contains('/') {
        let second = segs
            .get(1)
            .ok_or_else(|| RouteError::BadName(first.to_string(), NameError::BadScope))?;
        let text = format!("{first}/{second}");
        let name = PackageName::parse(&text).map_err(|e| RouteError::BadName(text, e))?;
        return Ok((name, &segs[2..]));
    }
    let name = PackageName::parse(first).map_err(|e| RouteError::BadName(first.to_string(), e))?;
    Ok((name, &segs[1..]))
}

/// A dist-tag write (`set`) or removal, or its rejection when the tag is not valid.
fn tag_route(name: PackageName, tag: &str, set: bool) -> Result<Route, RouteError> {
    match DistTag::parse(tag) {
        Ok(tag) if set => Ok(Route::Publish(PublishRoute::SetTag { name, tag })),
        Ok(tag) => Ok(Route::Publish(PublishRoute::DeleteTag { name, tag })),
        Err(e) => Err(RouteError::Rejected(Rejected {
            traits: RouteTraits {
                group: RouteGroup::Publish,
                writes: true,
                body: set.then_some(RouteLimit::Small),
                signs_in: false,
                web: false,
            },
            package: name,
            value: tag.to_string(),
            error: if set {
                ParamError::SetTag(e)
            } else {
                ParamError::DeleteTag(e)
            },
        })),
    }
}

/// Resolves a method and a path (with any public-URL prefix already removed).
pub fn resolve(method: &Method, raw_path: &str) -> Result<Route, RouteError> {
    let segs = segments(raw_path)?;
    let s: Vec<&str> = segs.iter().map(AsRef::as_ref).collect();
    let m = method;
    let only = |allowed: &Method, route: Route| {
        if m == allowed {
            Ok(route)
        } else {
            Err(RouteError::MethodNotAllowed)
        }
    };
    use AuthRoute as A;
    use MetadataRoute as M;
    let meta = Route::Metadata;
    let auth = Route::Auth;
    match s.as_slice() {
        [] if m == Method::GET => Ok(meta(M::Root)),
        [] => Err(RouteError::NotFound),
        ["-", "web"] => only(&Method::GET, meta(M::WebList)),
        ["-", "web", "search"] => only(&Method::GET, meta(M::WebSearch)),
        ["-", "web", "static", file] => only(
            &Method::GET,
            meta(M::WebStatic {
                file: (*file).to_string(),
            }),
        ),
        ["-", "web", "package", ..] => {
            let (name, rest) = take_name(&s[3..])?;
            let version = match rest {
                [] => None,
                ["v", version] => Some(Version::parse(version).map_err(|_| RouteError::NotFound)?),
                _ => return Err(RouteError::NotFound),
            };
            only(&Method::GET, meta(M::WebPackage { name, version }))
        }
        ["-", "web", "login"] => only(&Method::GET, auth(A::WebSignIn)),
        ["-", "web", "callback"] => only(&Method::GET, auth(A::WebCallback)),
        ["-", "web", "logout"] => only(&Method::POST, auth(A::WebSignOut)),
        ["-", "v1", "login", "done"] => only(&Method::GET, auth(A::WebLoginDone)),
        ["-", "ping"] => only(&Method::GET, meta(M::Ping)),
        ["_session"] => only(&Method::POST, auth(A::Session)),
        ["-", "ready"] => only(&Method::GET, meta(M::Ready)),
        ["-", "whoami"] => only(&Method::GET, auth(A::Whoami)),
        ["-", "v1", "search"] => only(&Method::GET, meta(M::Search)),
        ["-", "v1", "login"] => only(&Method::POST, auth(A::WebLogin)),
        ["-", "npm", "v1", "security", "advisories", "bulk"] => {
            only(&Method::POST, meta(M::AdvisoriesBulk))
        }
        ["-", "npm", "v1", "tokens"] => match *m {
            Method::GET => Ok(auth(A::TokensList)),
            Method::POST => Ok(auth(A::TokenCreate)),
            _ => Err(RouteError::MethodNotAllowed),
        },
        ["-", "npm", "v1", "tokens", "token", key] => only(
            &Method::DELETE,
            auth(A::TokenDelete {
                key: TokenKey::parse(key),
            }),
        ),
        ["-", "npm", "v1", "oidc", "token", "exchange", "package", ..] => {
            let (name, rest) = take_name(&s[7..])?;
            if !rest.is_empty() {
                return Err(RouteError::NotFound);
            }
            only(&Method::POST, auth(A::OidcExchange { name }))
        }
        ["-", "npm", "v1", "security", "audits", "quick"] => {
            only(&Method::POST, meta(M::AuditsQuick))
        }
        ["-", "_view", "starredByUser"] => only(&Method::GET, meta(M::StarredByUser)),
        ["-", "npm", "v1", "keys"] => only(&Method::GET, meta(M::SigningKeys)),
        ["-", "npm", "v1", "attestations", rest @ ..] if !rest.is_empty() && rest.len() <= 2 => {
            // `NAME@VERSION`, a scoped name's slash escaped or not.
            let spec = rest.join("/");
            let (name, version) = spec
                .get(1..)
                .and_then(|tail| tail.rsplit_once('@'))
                .map(|(name, version)| (format!("{}{name}", &spec[..1]), version))
                .ok_or(RouteError::NotFound)?;
            let name =
                PackageName::parse(&name).map_err(|e| RouteError::BadName(name.clone(), e))?;
            let version = Version::parse(version).map_err(|_| RouteError::NotFound)?;
            only(&Method::GET, meta(M::Attestations { name, version }))
        }
        ["-", "user", user] if user.starts_with("org.couchdb.user:") => {
            let user = user["org.couchdb.user:".len()..].to_string();
            match *m {
                Method::PUT => Ok(auth(A::LegacyLogin { user })),
                Method::GET => Ok(auth(A::LegacyUser { user })),
                _ => Err(RouteError::MethodNotAllowed),
            }
        }
        ["-", "user", user, "-rev", _] if user.starts_with("org.couchdb.user:") => only(
            &Method::PUT,
            auth(A::LegacyUserUpdate {
                user: user["org.couchdb.user:".len()..].to_string(),
            }),
        ),
        ["-", "package", ..] => {
            let (name, rest) = take_name(&s[2..])?;
            package_route(m, name, rest)
        }
        ["-", ..] => Err(RouteError::NotFound),
        _ => {
            let (name, rest) = take_name(&s)?;
            name_route(m, name, rest)
        }
    }
}

/// `/-/package/NAME/...`: dist-tags, visibility and trust configurations.
fn package_route(m: &Method, name: PackageName, rest: &[&str]) -> Result<Route, RouteError> {
    use MetadataRoute as M;
    use PublishRoute as P;
    let (meta, publish) = (Route::Metadata, Route::Publish);
    match (rest, m) {
        (["dist-tags"], &Method::GET) => Ok(meta(M::DistTags { name })),
        (["visibility"], &Method::GET) => Ok(meta(M::Visibility { name })),
        (["visibility" | "dist-tags"], _) => Err(RouteError::MethodNotAllowed),
        (["dist-tags", tag], &Method::PUT | &Method::POST) => tag_route(name, tag, true),
        (["dist-tags", tag], &Method::DELETE) => tag_route(name, tag, false),
        (["dist-tags", _], _) => Err(RouteError::MethodNotAllowed),
        (["trust"], &Method::GET) => Ok(publish(P::TrustList { name })),
        (["trust"], &Method::POST) => Ok(publish(P::TrustCreate { name })),
        (["trust"], _) => Err(RouteError::MethodNotAllowed),
        (["trust", id], &Method::DELETE) => Ok(publish(P::TrustRevoke {
            name,
            id: TrustId::parse(id),
        })),
        (["trust", _], _) => Err(RouteError::MethodNotAllowed),
        (["origin"], &Method::GET) => Ok(publish(P::OriginGet { name })),
        (["origin"], &Method::PUT) => Ok(publish(P::OriginSet { name })),
        (["origin"], _) => Err(RouteError::MethodNotAllowed),
        _ => Err(RouteError::NotFound),
    }
}

/// `/NAME/...`: the packument, a version or tag, tarballs, publish and unpublish.
fn name_route(m: &Method, name: PackageName, rest: &[&str]) -> Result<Route, RouteError> {
    use MetadataRoute as M;
    use PublishRoute as P;
    let (meta, publish) = (Route::Metadata, Route::Publish);
    match (rest, m) {
        ([], &Method::GET | &Method::HEAD) => Ok(meta(M::Packument { name })),
        ([], &Method::PUT) => Ok(publish(P::Put { name, rev: None })),
        ([], _) => Err(RouteError::MethodNotAllowed),
        (["-rev", rev], &Method::PUT) => Ok(publish(P::Put {
            name,
            rev: Some(Revision::parse(rev)),
        })),
        (["-rev", rev], &Method::DELETE) => Ok(publish(P::Unpublish {
            name,
            rev: Revision::parse(rev),
        })),
        (["-rev", _], _) => Err(RouteError::MethodNotAllowed),
        (["-", file], &Method::GET | &Method::HEAD) => {
            let file = TarballFile::parse(&name, file);
            Ok(Route::Tarball(TarballRoute::Download { name, file }))
        }
        (["-", _], _) => Err(RouteError::MethodNotAllowed),
        (["-", file, "-rev", rev], &Method::DELETE) => {
            let file = TarballFile::parse(&name, file);
            Ok(publish(P::DeleteTarball {
                name,
                file,
                rev: Revision::parse(rev),
            }))
        }
        (["-", file, "-rev", _], &Method::PUT) => {
            let file = TarballFile::parse(&name, file);
            Ok(publish(P::UploadTarball { name, file }))
        }
        (["-", _, "-rev", _], _) => Err(RouteError::MethodNotAllowed),
        ([version], &Method::PUT) if parse_version(version).is_ok() => Ok(publish(P::Release {
            name,
            version: parse_version(version).map_err(|_| RouteError::NotFound)?,
            tag: None,
        })),
        ([version, "-tag", tag], &Method::PUT) if parse_version(version).is_ok() => {
            let tag = DistTag::parse(tag).map_err(|_| RouteError::NotFound)?;
            Ok(publish(P::Release {
                name,
                version: parse_version(version).map_err(|_| RouteError::NotFound)?,
                tag: Some(tag),
            }))
        }
        ([spec], &Method::GET | &Method::HEAD) if !spec.starts_with('-') => {
            Ok(meta(M::VersionOrTag {
                name,
                spec: spec.to_string(),
            }))
        }
        // `client.tag` of npm-registry-client (npm 1.x): `PUT /NAME/TAG` with the version as a
        // JSON string, as `PUT /-/package/NAME/dist-tags/TAG`.
        ([spec], &Method::PUT) if !spec.starts_with('-') && parse_version(spec).is_err() => {
            tag_route(name, spec, true)
        }
        ([spec], _) if !spec.starts_with('-') => Err(RouteError::MethodNotAllowed),
        _ => Err(RouteError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> PackageName {
        PackageName::parse(n).unwrap()
    }

    fn file(n: &str, f: &str) -> TarballFile {
        TarballFile::parse(&name(n), f)
    }

    fn tag(t: &str) -> DistTag {
        DistTag::parse(t).unwrap()
    }

    #[test]
    fn npm_1_3s_twice_escaped_scoped_names() {
        assert_eq!(
            resolve(&Method::PUT, "/%2540acme%252Fwidgets"),
            Ok(Route::Publish(PublishRoute::Put {
                name: name("@acme/widgets"),
                rev: None
            }))
        );
        assert_eq!(
            resolve(&Method::PUT, "/%2540acme%252fwidgets/1.0.0/-tag/latest"),
            Ok(Route::Publish(PublishRoute::Release {
                name: name("@acme/widgets"),
                version: Version::parse("1.0.0").unwrap(),
                tag: Some(tag("latest")),
            }))
        );
        assert_eq!(
            resolve(
                &Method::PUT,
                "/%2540acme%252Fwidgets/-/%2540acme%252Fwidgets-1.0.0.tgz/-rev/3-abc"
            ),
            Ok(Route::Publish(PublishRoute::UploadTarball {
                name: name("@acme/widgets"),
                file: file("@acme/widgets", "@acme/widgets-1.0.0.tgz"),
            }))
        );
        // Escaped twice without a slash is no scoped name.
        assert!(resolve(&Method::GET, "/%2540acme").is_err());
    }

    #[test]
    fn couchdb_user_documents_and_views() {
        let user = |r: &str| r.to_string();
        assert_eq!(
            resolve(&Method::GET, "/-/user/org.couchdb.user:bob"),
            Ok(Route::Auth(AuthRoute::LegacyUser { user: user("bob") }))
        );
        assert_eq!(
            resolve(&Method::PUT, "/-/user/org.couchdb.user:bob/-rev/1-0"),
            Ok(Route::Auth(AuthRoute::LegacyUserUpdate {
                user: user("bob")
            }))
        );
        assert_eq!(
            resolve(&Method::DELETE, "/-/user/org.couchdb.user:bob"),
            Err(RouteError::MethodNotAllowed)
        );
        assert_eq!(
            resolve(&Method::GET, "/-/_view/starredByUser"),
            Ok(Route::Metadata(MetadataRoute::StarredByUser))
        );
        // The update proves a password: its credentials are checked, not skipped.
        let update = resolve(&Method::PUT, "/-/user/org.couchdb.user:bob/-rev/1-0").unwrap();
        assert!(!update.traits().signs_in);
    }

    #[test]
    fn scoped_names_in_every_encoding() {
        for p in ["/@s%2fn", "/@s%2Fn", "/%40s%2fn", "/@s/n", "/@s/n/"] {
            assert_eq!(
                resolve(&Method::GET, p),
                Ok(Route::Metadata(MetadataRoute::Packument {
                    name: name("@s/n")
                })),
                "{p}"
            );
        }
        let version_or_tag = |n: &str, spec: &str| {
            Ok(Route::Metadata(MetadataRoute::VersionOrTag {
                name: name(n),
                spec: spec.into(),
            }))
        };
        assert_eq!(
            resolve(&Method::GET, "/@s/n/1.0.0"),
            version_or_tag("@s/n", "1.0.0")
        );
        assert_eq!(
            resolve(&Method::GET, "/@s%2fn/latest"),
            version_or_tag("@s/n", "latest")
        );
        assert_eq!(
            resolve(&Method::GET, "/n/1.0.0"),
            version_or_tag("n", "1.0.0")
        );
        assert_eq!(
            resolve(&Method::GET, "/@s/n/-/n-1.0.0.tgz"),
            Ok(Route::Tarball(TarballRoute::Download {
                name: name("@s/n"),
                file: file("@s/n", "n-1.0.0.tgz"),
            }))
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
        use PublishRoute as P;
        let publish = |r| Ok(Route::Publish(r));
        assert_eq!(
            resolve(&Method::PUT, "/@s%2fn"),
            publish(P::Put {
                name: name("@s/n"),
                rev: None
            })
        );
        assert_eq!(
            resolve(&Method::PUT, "/n/-rev/3-ab"),
            publish(P::Put {
                name: name("n"),
                rev: Some(Revision::parse("3-ab"))
            })
        );
        assert_eq!(
            resolve(&Method::DELETE, "/n/-rev/3-ab"),
            publish(P::Unpublish {
                name: name("n"),
                rev: Revision::parse("3-ab")
            })
        );
        assert_eq!(
            resolve(&Method::DELETE, "/@s/n/-/n-1.0.0.tgz/-rev/3"),
            publish(P::DeleteTarball {
                name: name("@s/n"),
                file: file("@s/n", "n-1.0.0.tgz"),
                rev: Revision::parse("3"),
            })
        );
        assert_eq!(
            resolve(&Method::GET, "/-/package/@s%2fn/dist-tags"),
            Ok(Route::Metadata(MetadataRoute::DistTags {
                name: name("@s/n")
            }))
        );
        assert_eq!(
            resolve(&Method::PUT, "/-/package/@s/n/dist-tags/beta"),
            publish(P::SetTag {
                name: name("@s/n"),
                tag: tag("beta")
            })
        );
        assert_eq!(
            resolve(&Method::POST, "/-/package/@s%2fn/trust"),
            publish(P::TrustCreate { name: name("@s/n") })
        );
        assert_eq!(
            resolve(&Method::GET, "/-/package/@s/n/trust"),
            publish(P::TrustList { name: name("@s/n") })
        );
        assert_eq!(
            resolve(&Method::DELETE, "/-/package/%40s%2Fn/trust/ab12"),
            publish(P::TrustRevoke {
                name: name("@s/n"),
                id: TrustId::parse("ab12")
            })
        );
        assert_eq!(
            resolve(&Method::PUT, "/-/package/@s/n/trust"),
            Err(RouteError::MethodNotAllowed)
        );
        assert_eq!(
            resolve(&Method::GET, "/-/ping"),
            Ok(Route::Metadata(MetadataRoute::Ping))
        );
        for p in [
            "/-/npm/v1/oidc/token/exchange/package/@s%2fn",
            "/-/npm/v1/oidc/token/exchange/package/@s/n",
        ] {
            assert_eq!(
                resolve(&Method::POST, p),
                Ok(Route::Auth(AuthRoute::OidcExchange { name: name("@s/n") }))
            );
        }
        assert_eq!(
            resolve(&Method::GET, "/-/npm/v1/oidc/token/exchange/package/@s%2fn"),
            Err(RouteError::MethodNotAllowed)
        );
        assert_eq!(
            resolve(&Method::GET, "/-/package/@s%2fn/visibility"),
            Ok(Route::Metadata(MetadataRoute::Visibility {
                name: name("@s/n")
            }))
        );
        assert_eq!(
            resolve(&Method::GET, "/-/ready"),
            Ok(Route::Metadata(MetadataRoute::Ready))
        );
        assert_eq!(
            resolve(&Method::PUT, "/-/user/org.couchdb.user:bob"),
            Ok(Route::Auth(AuthRoute::LegacyLogin { user: "bob".into() }))
        );
        assert_eq!(
            resolve(&Method::POST, "/n"),
            Err(RouteError::MethodNotAllowed)
        );
        assert_eq!(resolve(&Method::GET, "/-/nope"), Err(RouteError::NotFound));
    }

    #[test]
    fn parameters_are_typed_at_the_edge() {
        // A tag that is a version range is refused, as the route it would have been.
        match resolve(&Method::PUT, "/-/package/n/dist-tags/%5E1.0.0") {
            Err(RouteError::Rejected(Rejected {
                traits,
                error,
                value,
                ..
            })) => {
                assert_eq!(value, "^1.0.0");
                assert_eq!(traits.group, RouteGroup::Publish);
                assert!(traits.writes);
                assert_eq!(traits.body, Some(RouteLimit::Small));
                assert!(matches!(error, ParamError::SetTag(TagError::IsRange(_))));
                assert!(error.to_string().starts_with("invalid dist-tag: "));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            resolve(&Method::DELETE, "/-/package/n/dist-tags/1.0.0"),
            Err(RouteError::Rejected(Rejected {
                traits: RouteTraits { body: None, .. },
                ..
            }))
        ));
        // A file name carries its version only when it is one of its package's tarballs.
        assert_eq!(
            file("@s/n", "n-1.2.3-beta.1.tgz").version(),
            Some(&Version::parse("1.2.3-beta.1").unwrap())
        );
        for other in ["m-1.0.0.tgz", "n-1.0.tgz", "n-1.0.0.tar", "../n-1.0.0.tgz"] {
            assert_eq!(file("@s/n", other).version(), None, "{other}");
        }
        // A token key may be a whole token: never printed.
        let key = TokenKey::parse("npm_secret");
        assert!(!format!("{key:?}").contains("secret"));
        assert_eq!(key.expose(), "npm_secret");
    }

    #[test]
    fn traits_follow_the_route() {
        let traits = |m: &Method, p: &str| resolve(m, p).unwrap().traits();
        assert!(traits(&Method::PUT, "/n").writes);
        assert_eq!(traits(&Method::PUT, "/n").body, Some(RouteLimit::Publish));
        assert!(traits(&Method::POST, "/-/npm/v1/tokens").writes);
        assert!(traits(&Method::DELETE, "/-/npm/v1/tokens/token/k").writes);
        assert!(!traits(&Method::GET, "/-/npm/v1/tokens").writes);
        assert!(!traits(&Method::GET, "/n").writes);
        assert!(traits(&Method::PUT, "/-/user/org.couchdb.user:bob").signs_in);
        assert!(traits(&Method::POST, "/-/npm/v1/oidc/token/exchange/package/n").signs_in);
        assert!(!traits(&Method::GET, "/-/whoami").signs_in);
        assert_eq!(
            traits(&Method::POST, "/-/package/n/trust").body,
            Some(RouteLimit::Small)
        );
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
