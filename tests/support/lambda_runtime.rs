//! A fake of the AWS Lambda Runtime API (the endpoints a function's runtime client polls), so a
//! function binary can be started as a process and answer real invocations, as on Lambda.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{Notify, mpsc};

#[derive(Default)]
struct Shared {
    pending: Mutex<VecDeque<(String, Value)>>,
    ready: Notify,
    /// When the function first asked for an invocation: the end of its init phase.
    first_poll: Mutex<Option<Instant>>,
    /// How many times the function has asked for an invocation.
    polls: Mutex<u64>,
    polled: Notify,
}

/// What the function sent back for one invocation.
#[derive(Debug)]
pub enum Outcome {
    /// `POST /invocation/{id}/response` with this JSON.
    Response(Value),
    /// `POST /invocation/{id}/error` or `/init/error` with this JSON.
    Error(Value),
}

/// A running fake Runtime API.
pub struct FakeRuntime {
    /// `host:port`, for `AWS_LAMBDA_RUNTIME_API`.
    pub address: SocketAddr,
    shared: Arc<Shared>,
    outcomes: mpsc::UnboundedReceiver<(String, Outcome)>,
    next_id: u64,
}

type Tx = mpsc::UnboundedSender<(String, Outcome)>;

async fn next(State((shared, _)): State<(Arc<Shared>, Tx)>) -> Response {
    shared
        .first_poll
        .lock()
        .unwrap()
        .get_or_insert_with(Instant::now);
    *shared.polls.lock().unwrap() += 1;
    shared.polled.notify_waiters();
    loop {
        let notified = shared.ready.notified();
        if let Some((id, event)) = shared.pending.lock().unwrap().pop_front() {
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                + Duration::from_secs(30);
            let mut headers = HeaderMap::new();
            headers.insert(
                "lambda-runtime-aws-request-id",
                HeaderValue::from_str(&id).unwrap(),
            );
            headers.insert(
                "lambda-runtime-deadline-ms",
                HeaderValue::from(deadline.as_millis() as u64),
            );
            headers.insert(
                "lambda-runtime-invoked-function-arn",
                HeaderValue::from_static("arn:aws:lambda:eu-west-1:123456789012:function:registry"),
            );
            headers.insert(
                "lambda-runtime-trace-id",
                HeaderValue::from_static("Root=1-00000000-000000000000000000000000"),
            );
            return (StatusCode::OK, headers, axum::Json(event)).into_response();
        }
        notified.await;
    }
}

async fn respond(
    State((_, tx)): State<(Arc<Shared>, Tx)>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    let _ = tx.send((
        id,
        Outcome::Response(serde_json::from_slice(&body).unwrap_or(Value::Null)),
    ));
    StatusCode::ACCEPTED
}

async fn invocation_error(
    State((_, tx)): State<(Arc<Shared>, Tx)>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    let _ = tx.send((
        id,
        Outcome::Error(serde_json::from_slice(&body).unwrap_or(Value::Null)),
    ));
    StatusCode::ACCEPTED
}

async fn init_error(
    State((_, tx)): State<(Arc<Shared>, Tx)>,
    body: axum::body::Bytes,
) -> StatusCode {
    let _ = tx.send((
        "init".into(),
        Outcome::Error(serde_json::from_slice(&body).unwrap_or(Value::Null)),
    ));
    StatusCode::ACCEPTED
}

impl FakeRuntime {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> FakeRuntime {
        let shared = Arc::new(Shared::default());
        let (tx, outcomes) = mpsc::unbounded_channel();
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(respond),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(invocation_error),
            )
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state((shared.clone(), tx));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeRuntime {
            address,
            shared,
            outcomes,
            next_id: 0,
        }
    }

    /// When the function first polled for an invocation (its init phase ended), if it has.
    pub fn first_poll(&self) -> Option<Instant> {
        *self.shared.first_poll.lock().unwrap()
    }

    /// Waits (bounded) until the function has finished every invocation it was given, including
    /// the work it does after posting a response, and asks for the next: then Lambda would
    /// freeze it, and the invocation's billed duration ends.
    pub async fn idle(&self) {
        let wanted = self.next_id + 1;
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let polled = self.shared.polled.notified();
                if *self.shared.polls.lock().unwrap() >= wanted {
                    return;
                }
                polled.await;
            }
        })
        .await
        .expect("the function asked for its next invocation within 60 s");
    }

    /// Queues an event and waits (bounded) for the function's answer to it.
    pub async fn invoke(&mut self, event: Value) -> Outcome {
        self.next_id += 1;
        let id = format!("req-{}", self.next_id);
        self.shared
            .pending
            .lock()
            .unwrap()
            .push_back((id.clone(), event));
        self.shared.ready.notify_one();
        loop {
            let (got, outcome) =
                tokio::time::timeout(Duration::from_secs(60), self.outcomes.recv())
                    .await
                    .expect("the function answered within 60 s")
                    .expect("runtime channel open");
            if got == id || got == "init" {
                return outcome;
            }
        }
    }
}

/// A function binary started against a fake runtime, killed on drop.
pub struct FunctionProcess {
    child: Child,
    /// When the process was spawned.
    pub started: Instant,
}

/// Which build the function binaries come from, for printed figures.
pub fn function_build() -> String {
    match std::env::var("LAMBDA_FUNCTION_DIR") {
        Ok(dir) => format!("binaries from {dir}"),
        Err(_) => "debug build".into(),
    }
}

impl FunctionProcess {
    /// Starts `binary` (a sibling of the test executable, or from `$LAMBDA_FUNCTION_DIR` when
    /// set, e.g. the release builds for the start-up benchmark) with the Lambda environment and
    /// `env`.
    pub fn start(binary: &str, runtime: &FakeRuntime, env: &[(String, String)]) -> FunctionProcess {
        let path = match std::env::var_os("LAMBDA_FUNCTION_DIR") {
            Some(dir) => std::path::PathBuf::from(dir).join(binary),
            None => crate::sibling_binary(binary),
        };
        let mut cmd = Command::new(path);
        cmd.env("AWS_LAMBDA_RUNTIME_API", runtime.address.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", binary)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "test")
            .env("REGISTRY_UPSTREAM", "")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        FunctionProcess {
            child: cmd.spawn().expect("start the function binary"),
            started,
        }
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
