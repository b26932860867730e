//! A proxy in front of the S3 emulator that enforces what real S3 enforces and the emulators do
//! not: a request may carry one authentication mechanism, never a presigned query string *and*
//! an `Authorization` header (S3 answers `400 InvalidArgument`, "Only one auth mechanism
//! allowed"). A client that keeps the registry's token when it follows the tarball redirect to
//! S3 works against LocalStack and moto but fails against AWS; through this gate it fails here.
//! It also records every request, so a test can show that downloads went through presigned URLs.

use std::net::TcpListener as StdListener;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::Response;

/// One request the gate saw.
#[derive(Debug, Clone)]
pub struct GateRequest {
    /// HTTP method.
    pub method: String,
    /// Path (without the query).
    pub path: String,
    /// Whether it was a presigned URL (signature in the query).
    pub presigned: bool,
    /// Whether it carried an `Authorization` header.
    pub authorization: bool,
    /// The status it was answered with.
    pub status: u16,
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    seen: Mutex<Vec<GateRequest>>,
}

/// The gate. It serves until the test process ends: clients of the resources it fronts (an
/// `AwsStorage`, a registry process) may outlive the value that made it.
pub struct S3Gate {
    /// The port it listens on (loopback).
    pub port: u16,
    shared: Arc<Shared>,
}

const ONE_MECHANISM: &str = "Only one auth mechanism allowed; only the X-Amz-Algorithm query \
    parameter, Signature query string parameter or the Authorization header should be specified";

impl S3Gate {
    /// Starts a gate in front of `upstream` (`http://host:port`), on its own thread and runtime
    /// so that it answers while a test blocks on a client process.
    pub fn start(upstream: &str) -> S3Gate {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            seen: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(forward).with_state(shared.clone());
        std::thread::Builder::new()
            .name("s3-gate".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let _ = axum::serve(listener, app).await;
                });
            })
            .unwrap();
        S3Gate { port, shared }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<GateRequest> {
        self.shared.seen.lock().unwrap().clone()
    }
}

fn hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION || name == header::TRANSFER_ENCODING || name.as_str() == "keep-alive"
}

async fn forward(State(gate): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let query = parts.uri.query().unwrap_or("");
    let presigned = query
        .split('&')
        .any(|p| p.starts_with("X-Amz-Signature=") || p.starts_with("Signature="));
    let authorization = parts.headers.contains_key(header::AUTHORIZATION);
    let mut record = GateRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        presigned,
        authorization,
        status: 0,
    };
    let response = if presigned && authorization {
        Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header(header::CONTENT_TYPE, "application/xml")
            .body(Body::from(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidArgument</Code>\
                 <Message>{ONE_MECHANISM}</Message><ArgumentName>Authorization</ArgumentName>\
                 </Error>"
            )))
            .unwrap()
    } else {
        relay(&gate, parts, body).await
    };
    record.status = response.status().as_u16();
    gate.seen.lock().unwrap().push(record);
    response
}

async fn relay(gate: &Shared, parts: axum::http::request::Parts, body: Body) -> Response {
    let bad_gateway = |e: String| {
        Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::from(e))
            .unwrap()
    };
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return bad_gateway(e.to_string()),
    };
    let target = format!(
        "{}{}",
        gate.upstream,
        parts
            .uri
            .path_and_query()
            .map_or("/", axum::http::uri::PathAndQuery::as_str)
    );
    // Headers go through unchanged, `Host` included: it is part of what SigV4 signed.
    let mut upstream = gate.client.request(parts.method.clone(), target);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            upstream = upstream.header(name, value);
        }
    }
    let answer = match upstream.body(body).send().await {
        Ok(a) => a,
        Err(e) => return bad_gateway(e.to_string()),
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) {
            response = response.header(name, value);
        }
    }
    match answer.bytes().await {
        Ok(bytes) => response.body(Body::from(bytes)).unwrap(),
        Err(e) => bad_gateway(e.to_string()),
    }
}
