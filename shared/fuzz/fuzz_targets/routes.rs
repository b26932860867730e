//! Route parsing: `routes::resolve` over every method clients use (and some they do not).
//!
//! The first byte picks the method; the rest is the raw path.
//!
//! Properties: nothing panics; every name in a resolved route is a valid package name; a route
//! is only ever resolved for a method that may carry it (writes never come from GET or HEAD,
//! reads never from PUT or DELETE); and for the paths real clients send (no empty segments, no
//! trailing slash) the API Gateway route table sends a resolved request to the function that
//! answers it.
#![no_main]

use axum::http::Method;
use libfuzzer_sys::fuzz_target;
use registry::domain::PackageName;
use registry::http::route_table::match_route_table;
use registry::http::routes::{MetadataRoute, PublishRoute, Route, TarballRoute, resolve};

const METHODS: [Method; 8] = [
    Method::GET,
    Method::HEAD,
    Method::PUT,
    Method::POST,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
    Method::TRACE,
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(path) = std::str::from_utf8(rest) else {
        return;
    };
    let method = &METHODS[usize::from(which) % METHODS.len()];
    let Ok(route) = resolve(method, path) else {
        return;
    };

    let name = route.package();
    if let Some(name) = name {
        assert_eq!(PackageName::parse(name.as_str()).as_ref(), Ok(name));
    }

    let reads = matches!(
        route,
        Route::Metadata(MetadataRoute::Packument { .. } | MetadataRoute::VersionOrTag { .. })
            | Route::Tarball(TarballRoute::Download { .. })
    );
    let read_method = *method == Method::GET || *method == Method::HEAD;
    assert!(!reads || read_method, "{method} {path} -> {route:?}");
    let writes = matches!(
        route,
        Route::Publish(
            PublishRoute::Put { .. }
                | PublishRoute::Unpublish { .. }
                | PublishRoute::DeleteTarball { .. }
                | PublishRoute::SetTag { .. }
                | PublishRoute::DeleteTag { .. }
        )
    );
    assert!(!(writes && read_method), "{method} {path} -> {route:?}");
    assert!(
        !writes || route.traits().writes,
        "{method} {path} -> {route:?}"
    );

    let client_shaped = path.starts_with('/')
        && !path.ends_with('/')
        && !path[1..].split('/').any(str::is_empty)
        // Known gap, reported: the table has no `HEAD /{scope}/{package}/{version}` (no client
        // sends it), so on API Gateway that HEAD is its own 404.
        && !(*method == Method::HEAD
            && matches!(route, Route::Metadata(MetadataRoute::VersionOrTag { .. })))
        // `@scope/-` cannot be created (`PackageName::parse_new`): API Gateway reads
        // `/@scope/-/x` as a tarball path, whatever the resolver makes of it.
        && name.is_none_or(|n| n.base_name() != "-");
    if client_shaped {
        let row = match_route_table(method.as_str(), path);
        assert_eq!(
            row.map(|r| r.group),
            Some(route.group()),
            "{method} {path} resolves to {route:?} but API Gateway picks {row:?}"
        );
    }
});
