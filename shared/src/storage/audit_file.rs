//! The embedded backend's audit log: an append-only JSON-lines file, `audit.jsonl` in the data
//! directory, one event per line, each append fsynced before the request is answered.
//!
//! A file rather than a redb table: redb admits one process, so a table could not be read by
//! `registry-server audit` while the server runs, whereas a file can (and `tail -f`, `jq` and log
//! shippers read it as is). Appending is append-only by construction (`O_APPEND`); the file is
//! never rewritten. An append cut short by a crash leaves a last line without its newline: the
//! next append first ends that line, and readers skip lines that do not parse.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;

use super::{AuditLog, AuditRetention, StoreError};
use crate::domain::audit::{AuditEvent, AuditQuery};

/// The file's name in the data directory.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// The audit log as a JSON-lines file.
pub struct FileAuditLog {
    path: PathBuf,
    retention: AuditRetention,
    /// Serialises this process's appends; holds whether the file's tail has been checked.
    tail_checked: Arc<Mutex<bool>>,
}

impl FileAuditLog {
    /// The log in `data_dir` (the file is created by the first append).
    pub fn new(data_dir: &Path, retention: AuditRetention) -> Self {
        FileAuditLog {
            path: data_dir.join(AUDIT_FILE),
            retention,
            tail_checked: Arc::default(),
        }
    }

    /// Where the events are.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    use std::io::ErrorKind;
    if matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded) {
        return StoreError::InsufficientStorage(
            path.parent().unwrap_or(path).display().to_string(),
        );
    }
    StoreError::Internal(format!("audit log {}: {e}", path.display()))
}

fn append_line(path: &Path, line: &[u8], tail_checked: &mut bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let mut out = Vec::with_capacity(line.len() + 2);
    if !*tail_checked {
        // A crash in an earlier append may have left half a line: end it, so that this event
        // starts a line of its own (the half line is skipped by readers).
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                out.push(b'\n');
            }
        } else if let Some(dir) = path.parent() {
            // A new file: make its directory entry durable too.
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
    }
    out.extend_from_slice(line);
    out.push(b'\n');
    // One write of the whole line: with O_APPEND, lines never interleave.
    file.write_all(&out)?;
    file.sync_data()?;
    *tail_checked = true;
    Ok(())
}

#[async_trait]
impl AuditLog for FileAuditLog {
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let line = serde_json::to_vec(event).map_err(|e| StoreError::Internal(e.to_string()))?;
        let (path, lock) = (self.path.clone(), self.tail_checked.clone());
        tokio::task::spawn_blocking(move || {
            let mut tail_checked = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            append_line(&path, &line, &mut tail_checked).map_err(|e| io_error(&path, e))
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let path = self.path.clone();
        let text = tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_error(&path, e)),
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))??;
        let now = Utc::now();
        let mut skipped = 0usize;
        let mut found = Vec::new();
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<AuditEvent>(line) {
                Ok(e) if query.matches(&e) && !self.retention.expired(e.time, now) => found.push(e),
                Ok(_) => {}
                // A line cut short by a crash (or one being written right now).
                Err(_) => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::warn!(target: "audit", file = %self.path.display(), skipped, "skipped audit log lines that are not complete events");
        }
        Ok(query.finish(found))
    }
}
