//! Storage traits, shaped by what DynamoDB and S3 do well, and their backends.
//!
//! Semantics every backend must honour (the embedded one is no more forgiving than DynamoDB):
//! - a version is created by a conditional create: of two racing creates exactly one wins;
//! - package-level state is one small record, written only if its revision is still the one read;
//! - a write is all-or-nothing: the version, the version changes and the package record land together;
//! - tarballs are put before the metadata that references them.

pub mod aws;
pub mod embedded;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use semver::Version;

use crate::domain::{PackageDocument, PackageName, PackageRecord, TarballKey, VersionRecord};

/// Storage failures, as the HTTP layer needs to tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The package record changed since it was read; re-read and retry.
    #[error("the package changed while this request was being handled")]
    RevisionConflict,
    /// The version being created already exists.
    #[error("version already exists")]
    VersionExists,
    /// The version being created was unpublished; its number is retired.
    #[error("version was unpublished and cannot be published again")]
    VersionRetired,
    /// A version named in a change does not exist (or is not live).
    #[error("version {0} does not exist")]
    NoSuchVersion(Version),
    /// The backend cannot be reached or is overloaded; the client should retry.
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    /// Anything else (corrupt data, I/O errors).
    #[error("storage error: {0}")]
    Internal(String),
}

/// A change to one existing version record.
#[derive(Debug, Clone, PartialEq)]
pub enum VersionChange {
    /// Set (`Some`) or clear (`None`) the deprecation message of a live version.
    Deprecate(Version, Option<String>),
    /// Turn a live version into a tombstone.
    Unpublish(Version, DateTime<Utc>),
}

/// How a new version record may meet an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateMode {
    /// Fail with `VersionExists` if present (the default, and the only mode npm users expect).
    CreateOnly,
    /// Replace a live version (an opt-in operator setting). A tombstone still wins.
    AllowOverwrite,
}

/// One atomic write to a package.
#[derive(Debug, Clone)]
pub struct PackageWrite {
    /// The package record to store; its revision must be `expected_revision + 1` (or 1 when new).
    pub package: PackageRecord,
    /// The revision the writer read; `None` means the package record must not exist yet.
    pub expected_revision: Option<u64>,
    /// A version to create.
    pub create: Option<(VersionRecord, CreateMode)>,
    /// Changes to existing versions.
    pub changes: Vec<VersionChange>,
}

/// Package metadata: a small record per package and one record per version.
#[async_trait]
pub trait MetadataStore: Send + Sync {
    /// The package record alone (cheap: one item).
    async fn package(&self, name: &PackageName) -> Result<Option<PackageRecord>, StoreError>;
    /// The package record and all its version records.
    async fn document(&self, name: &PackageName) -> Result<Option<PackageDocument>, StoreError>;
    /// One version record.
    async fn version(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Option<VersionRecord>, StoreError>;
    /// Applies a write atomically, or nothing of it.
    async fn write(&self, write: PackageWrite) -> Result<(), StoreError>;
}

/// A stream of tarball bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// How a tarball is handed to the client.
pub enum TarballRead {
    /// The bytes, streamed through the registry.
    Bytes {
        /// Length in bytes.
        len: u64,
        /// The bytes.
        body: ByteStream,
    },
    /// A URL the client fetches the bytes from (a presigned S3 GET).
    Redirect(String),
}

/// Tarball bytes by key. Keys are immutable once written (they embed the content digest).
#[async_trait]
pub trait TarballStore: Send + Sync {
    /// Stores the bytes durably under `key` before returning.
    async fn put(&self, key: &TarballKey, bytes: Bytes) -> Result<(), StoreError>;
    /// Reads the bytes, or says where to get them; `None` if absent.
    async fn get(&self, key: &TarballKey) -> Result<Option<TarballRead>, StoreError>;
    /// Deletes the bytes; deleting an absent key succeeds.
    async fn delete(&self, key: &TarballKey) -> Result<(), StoreError>;
}
