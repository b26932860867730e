//! The local server's control socket: `registry-server sweep` on a data directory that a running
//! server holds (its database admits one process) asks that server to sweep, through a Unix
//! socket in the data directory, `control.sock`. The server then sweeps with what only it knows:
//! which tarballs belong to publishes in flight (see `storage::embedded`'s sweep).
//!
//! Who may ask: whoever may run the operator's other commands on the data directory (`audit`
//! reads its log file; a sweep of a stopped server opens its database). The socket is made
//! readable and writable by its owner only, the server's user, and each connection's peer is
//! checked (`SO_PEERCRED`) to run as that user or as root: people who could stop the server
//! and sweep the directory themselves.
//!
//! One JSON line each way: `{"sweep":{"older_than_seconds":N}}`, answered by
//! `{"report":{"checked":…,"removed":[…],"incomplete":…}}` or `{"error":"…"}`. One request is
//! served at a time.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::StartError;
use crate::http::AppState;
use crate::storage::SweepReport;

/// The socket's name in the data directory.
pub const SOCKET: &str = "control.sock";

/// The longest a request line may be.
const MAX_REQUEST_BYTES: u64 = 4096;

/// How long a connection has to send its request: one at a time is served, so a client that
/// connects and says nothing must not hold up the next.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Request {
    /// Sweep tarballs (and leftovers) older than so many seconds.
    Sweep { older_than_seconds: u64 },
    /// Read (and set) a name's origin (`registry-server origin`).
    Origin { name: String, set: Option<String> },
    /// Sign the versions that need it (`registry-server keys backfill`).
    SigningBackfill,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Response {
    Report(SweepReport),
    Origin(serde_json::Value),
    Backfilled(crate::signing::backfill::Backfilled),
    Error(String),
}

/// The control socket of a server, bound in its data directory; the file is removed on drop.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The user the socket file belongs to: the server's.
    owner: u32,
    state: Arc<AppState>,
}

impl ControlSocket {
    /// Binds `data_dir/control.sock` for the server whose application is `state`. Only the
    /// process that holds the data directory's database may call this: a socket file already
    /// there was left by a server that died, and is replaced.
    pub fn bind(data_dir: &Path, state: Arc<AppState>) -> io::Result<Self> {
        let path = data_dir.join(SOCKET);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        // Until this, the socket has the umask's mode; the peer check covers that moment.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let owner = std::fs::metadata(&path)?.uid();
        Ok(Self {
            listener,
            path,
            owner,
            state,
        })
    }

    /// Answers requests, one at a time, until dropped.
    pub async fn serve(self) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => self.answer(stream).await,
                Err(e) => {
                    tracing::warn!(error = %e, socket = %self.path.display(), "control socket: accept failed");
                    // Out of file descriptors, most likely: let some close.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn answer(&self, mut stream: UnixStream) {
        let allowed = stream
            .peer_cred()
            .is_ok_and(|peer| peer.uid() == self.owner || peer.uid() == 0);
        let response = if allowed {
            match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await {
                Ok(Ok(request)) => self.run(request).await,
                Ok(Err(e)) => Response::Error(format!("bad request: {e}")),
                Err(_) => Response::Error("no request within 10 s".into()),
            }
        } else {
            tracing::warn!(socket = %self.path.display(), "control socket: refused a peer running as another user");
            Response::Error("refused: the server answers its own user only".into())
        };
        let mut line = serde_json::to_vec(&response).unwrap_or_default();
        line.push(b'\n');
        // The client may have gone; there is no one else to tell.
        let _ = stream.write_all(&line).await;
        let _ = stream.shutdown().await;
    }

    async fn run(&self, request: Request) -> Response {
        match request {
            Request::SigningBackfill => {
                match crate::signing::backfill::backfill(&self.state).await {
                    Ok(report) => {
                        tracing::info!(
                            checked = report.checked,
                            signed = report.signed.len(),
                            "signing backfill, as asked through the control socket"
                        );
                        Response::Backfilled(report)
                    }
                    Err(e) => Response::Error(e.to_string()),
                }
            }
            Request::Origin { name, set } => {
                match crate::http::upstream::origin_command(&self.state, &name, set.as_deref())
                    .await
                {
                    Ok(answer) => Response::Origin(answer),
                    Err(e) => Response::Error(e),
                }
            }
            Request::Sweep { older_than_seconds } => {
                let started = Instant::now();
                let swept = crate::storage::sweep(
                    self.state.metadata.as_ref(),
                    self.state.tarballs.as_ref(),
                    Duration::from_secs(older_than_seconds),
                )
                .await;
                let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                match swept {
                    Ok(report) => {
                        tracing::info!(
                            checked = report.checked,
                            removed = report.removed.len(),
                            incomplete = report.incomplete,
                            millis,
                            "swept, as asked through the control socket"
                        );
                        Response::Report(report)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, millis, "sweep failed");
                        Response::Error(e.to_string())
                    }
                }
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn read_request(stream: &mut UnixStream) -> io::Result<Request> {
    let mut line = String::new();
    BufReader::new(stream.take(MAX_REQUEST_BYTES))
        .read_line(&mut line)
        .await?;
    serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Asks the server running on `data_dir` to sweep, and waits for its report; `None` when no
/// server answers there (none runs, or one died and left its socket).
pub async fn sweep(
    data_dir: &Path,
    older_than: Duration,
) -> Result<Option<SweepReport>, StartError> {
    match ask(
        data_dir,
        &Request::Sweep {
            older_than_seconds: older_than.as_secs(),
        },
    )
    .await?
    {
        Some(Response::Report(report)) => Ok(Some(report)),
        Some(_) => Err(StartError::Control("unexpected answer to a sweep".into())),
        None => Ok(None),
    }
}

/// Asks the server running on `data_dir` for a name's origin (setting it first if `set`);
/// `None` when no server answers there.
pub async fn origin(
    data_dir: &Path,
    name: &str,
    set: Option<&str>,
) -> Result<Option<serde_json::Value>, StartError> {
    match ask(
        data_dir,
        &Request::Origin {
            name: name.to_string(),
            set: set.map(str::to_string),
        },
    )
    .await?
    {
        Some(Response::Origin(answer)) => Ok(Some(answer)),
        Some(_) => Err(StartError::Control(
            "unexpected answer to an origin request".into(),
        )),
        None => Ok(None),
    }
}

/// Asks the server running on `data_dir` to sign the versions that need it; `None` when no
/// server answers there.
pub async fn signing_backfill(
    data_dir: &Path,
) -> Result<Option<crate::signing::backfill::Backfilled>, StartError> {
    match ask(data_dir, &Request::SigningBackfill).await? {
        Some(Response::Backfilled(report)) => Ok(Some(report)),
        Some(_) => Err(StartError::Control(
            "unexpected answer to a signing backfill".into(),
        )),
        None => Ok(None),
    }
}

/// Sends one request to the server on `data_dir` and reads its answer (an error answer is
/// returned as an error); `None` when no server answers there.
async fn ask(data_dir: &Path, request: &Request) -> Result<Option<Response>, StartError> {
    let path = data_dir.join(SOCKET);
    let failed = |e: &dyn std::fmt::Display| {
        StartError::Control(format!(
            "the server's control socket {}: {e}",
            path.display()
        ))
    };
    let mut stream = match UnixStream::connect(&path).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(failed(&e)),
    };
    let mut request = serde_json::to_vec(request).map_err(|e| failed(&e))?;
    request.push(b'\n');
    stream.write_all(&request).await.map_err(|e| failed(&e))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .await
        .map_err(|e| failed(&e))?;
    match serde_json::from_str(&line).map_err(|e| failed(&e))? {
        Response::Error(e) => Err(failed(&e)),
        answer => Ok(Some(answer)),
    }
}
