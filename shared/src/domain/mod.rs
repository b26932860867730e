//! The registry's domain: names, versions, tags, packuments and publish validation. No I/O here.

pub mod audit;
pub mod confusion;
pub mod integrity;
pub mod manifest;
mod name;
pub mod package;
pub mod packument;
pub mod provenance;
pub mod publish;
pub mod repository;
pub mod signing;
mod tag;
pub mod tarball;
pub mod trust;

pub use manifest::Manifest;
pub use name::{NameError, PackageName};
pub use package::{
    Dist, LiveVersion, PackageDocument, PackageRecord, TarballKey, Touched, VersionRecord,
    VersionState,
};
pub use repository::RepoRef;
pub use tag::{DistTag, TagError};
