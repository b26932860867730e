//! Committing a verified publish, in named steps: refuse a taken version early, store the tarball,
//! commit the version with the package record, then settle (remove bytes nothing refers to, and
//! tell a lost answer from a lost race).

use std::future::Future;
use std::sync::Mutex;

use semver::Version;

use super::{Decision, Draft, PackageWriter, WriteError};
use crate::domain::publish::ValidPublish;
use crate::domain::{DistTag, PackageName, RepoRef, TarballKey, VersionRecord, VersionState};
use crate::storage::{CreateMode, StagedTarball, StoreError};

/// Who a publish is bound to, as authorised before the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The repository the package was bound to when the caller was authorised.
    pub checked: Option<RepoRef>,
    /// The repository it is bound to after this publish (GitHub mode; `None` in open mode).
    pub decided: Option<RepoRef>,
}

/// How a publish changed the package's binding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BindingChange {
    /// Bound as before (or open mode).
    #[default]
    Unchanged,
    /// A new package, bound to its first repository.
    Bound(RepoRef),
    /// Bound to another repository by an admin of the old one.
    Rebound {
        /// The repository it was bound to.
        from: RepoRef,
        /// The repository it is bound to now.
        to: RepoRef,
    },
}

impl BindingChange {
    fn between(stored: Option<&RepoRef>, next: Option<&RepoRef>) -> BindingChange {
        match (stored, next) {
            (Some(from), Some(to)) if from != to => BindingChange::Rebound {
                from: from.clone(),
                to: to.clone(),
            },
            (None, Some(to)) => BindingChange::Bound(to.clone()),
            _ => BindingChange::Unchanged,
        }
    }
}

/// A publish that landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// What the publish did to the binding.
    pub binding: BindingChange,
    /// The write's answer was lost (or an identical publish won the race), and the stored
    /// version was found to be exactly these bytes.
    pub confirmed_after_conflict: bool,
}

impl PackageWriter<'_> {
    /// Commits a verified publish of `name`. `rebind` decides the binding again (authorising the
    /// caller) when the stored one is no longer `binding.checked`: a racing first publish bound
    /// the name, or an admin rebound it; the old decision is never written.
    pub async fn publish<E, F, Fut>(
        &self,
        name: &PackageName,
        valid: &ValidPublish,
        binding: &Binding,
        rebind: F,
    ) -> Result<Published, WriteError<E>>
    where
        F: Fn(Option<RepoRef>) -> Fut,
        Fut: Future<Output = Result<Option<RepoRef>, E>>,
    {
        let previous = self.refuse_taken(name, &valid.version).await?;
        let key = valid.live.dist.tarball_key.clone();
        let staged = self.tarballs.stage(&key, valid.tarball.clone()).await?;
        let last_change = Mutex::new(BindingChange::Unchanged);
        let committed = self
            .commit(name, valid, staged, binding, &rebind, &last_change)
            .await;
        let decided = last_change
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.settle(name, &valid.version, &key, previous, committed, decided)
            .await
    }

    /// Refuses early, before any bytes are stored, a version that is taken. The conditional
    /// create in `commit` is what decides a race; this only saves an upload in the common case.
    async fn refuse_taken<E>(
        &self,
        name: &PackageName,
        version: &Version,
    ) -> Result<Option<VersionRecord>, WriteError<E>> {
        let previous = self.metadata.version(name, version).await?;
        match (&previous, self.create_mode) {
            (
                Some(VersionRecord {
                    state: VersionState::Unpublished { .. },
                    ..
                }),
                _,
            ) => Err(WriteError::Store(StoreError::VersionRetired)),
            (Some(_), CreateMode::CreateOnly) => Err(WriteError::VersionTaken {
                name: name.clone(),
                version: version.clone(),
            }),
            _ => Ok(previous),
        }
    }

    /// Creates the version and updates the package record in one conditional write.
    async fn commit<E, F, Fut>(
        &self,
        name: &PackageName,
        valid: &ValidPublish,
        staged: Option<StagedTarball>,
        binding: &Binding,
        rebind: &F,
        last_change: &Mutex<BindingChange>,
    ) -> Result<BindingChange, WriteError<E>>
    where
        F: Fn(Option<RepoRef>) -> Fut,
        Fut: Future<Output = Result<Option<RepoRef>, E>>,
    {
        let version = &valid.version;
        self.update(|| async {
            let current = self.metadata.package(name).await?;
            let bound_now = current.as_ref().and_then(|p| p.repository.clone());
            let next_binding = if bound_now == binding.checked {
                binding.decided.clone()
            } else {
                rebind(bound_now.clone())
                    .await
                    .map_err(WriteError::Refused)?
            };
            let change = BindingChange::between(bound_now.as_ref(), next_binding.as_ref());
            if let Ok(mut last) = last_change.lock() {
                *last = change.clone();
            }
            let mut draft = Draft::after(current.as_ref(), name);
            draft.record.unpublished = None;
            if next_binding.is_some() {
                draft.record.repository = next_binding;
            }
            for tag in &valid.tags {
                draft.record.dist_tags.insert(tag.clone(), version.clone());
            }
            draft
                .record
                .dist_tags
                .entry(DistTag::latest())
                .or_insert_with(|| version.clone());
            let record = VersionRecord {
                version: version.clone(),
                published: draft.now(),
                state: VersionState::Live(Box::new(valid.live.clone())),
            };
            draft.create_version(record, valid.readme.clone(), self.create_mode);
            draft.store_tarball(staged.clone());
            Ok(Decision::Write(draft, change))
        })
        .await
    }

    /// After the commit: on success, the bytes of an overwritten version go; on failure, ours go
    /// unless the stored version is exactly them, in which case the publish is done after all.
    async fn settle<E>(
        &self,
        name: &PackageName,
        version: &Version,
        key: &TarballKey,
        previous: Option<VersionRecord>,
        committed: Result<BindingChange, WriteError<E>>,
        decided: BindingChange,
    ) -> Result<Published, WriteError<E>> {
        let err = match committed {
            Ok(binding) => {
                if let Some(VersionRecord {
                    state: VersionState::Live(old),
                    ..
                }) = previous
                    && old.dist.tarball_key != *key
                {
                    self.remove_tarballs(&[old.dist.tarball_key]).await;
                }
                return Ok(Published {
                    binding,
                    confirmed_after_conflict: false,
                });
            }
            Err(err) => err,
        };
        // If this lookup fails too, the write may still have landed (a timeout after the
        // commit): keep the bytes, which `sweep` removes later if nothing refers to them.
        let winner = self.metadata.version(name, version).await;
        let (referenced, live) = match &winner {
            Ok(Some(VersionRecord {
                state: VersionState::Live(l),
                ..
            })) => (l.dist.tarball_key == *key, true),
            _ => (false, false),
        };
        if winner.is_ok() && !referenced {
            self.remove_tarballs(std::slice::from_ref(key)).await;
        }
        match err {
            // The stored version is exactly these bytes: our own write landed although its
            // answer was lost (a storage retry then saw the version "exist"), or an identical
            // publish won the race. Either way the client's publish is done.
            WriteError::Store(StoreError::VersionExists | StoreError::RevisionConflict)
                if referenced =>
            {
                Ok(Published {
                    binding: decided,
                    confirmed_after_conflict: true,
                })
            }
            WriteError::Store(StoreError::VersionExists) if live => Err(WriteError::VersionTaken {
                name: name.clone(),
                version: version.clone(),
            }),
            other => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::domain::publish::{PutDocument, parse_put};
    use crate::domain::tarball::TarballLimits;
    use crate::domain::{PackageDocument, PackageRecord};
    use crate::storage::embedded::open;
    use crate::storage::{MetadataStore, PackageWrite, TarballStore};

    /// Lands the first write, then answers it as if the answer was lost and a retry found the
    /// version already there: what a storage-level retry after a timeout looks like.
    struct LosesFirstAnswer<'a> {
        inner: &'a dyn MetadataStore,
        lost: AtomicBool,
    }

    #[async_trait]
    impl MetadataStore for LosesFirstAnswer<'_> {
        async fn package(&self, name: &PackageName) -> Result<Option<PackageRecord>, StoreError> {
            self.inner.package(name).await
        }
        async fn document(
            &self,
            name: &PackageName,
        ) -> Result<Option<PackageDocument>, StoreError> {
            self.inner.document(name).await
        }
        async fn version(
            &self,
            name: &PackageName,
            version: &Version,
        ) -> Result<Option<VersionRecord>, StoreError> {
            self.inner.version(name, version).await
        }
        async fn readme(
            &self,
            name: &PackageName,
            version: &Version,
        ) -> Result<Option<String>, StoreError> {
            self.inner.readme(name, version).await
        }
        async fn write(&self, write: PackageWrite) -> Result<(), StoreError> {
            self.inner.write(write).await?;
            if self.lost.swap(true, Ordering::SeqCst) {
                Ok(())
            } else {
                Err(StoreError::VersionExists)
            }
        }
    }

    fn valid_publish(name: &PackageName, version: &str) -> ValidPublish {
        let tarball = crate::testing::package_tgz(name.as_str(), version);
        let body = crate::testing::publish_doc(name.as_str(), version, &tarball).to_string();
        let PutDocument::Publish(pending) = parse_put(name, body.into()).expect("parses") else {
            panic!("a publish document");
        };
        pending
            .verify(name, TarballLimits::default())
            .expect("verifies")
    }

    #[tokio::test]
    async fn a_lost_answer_for_these_very_bytes_is_a_publish() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (stored_metadata, stored_tarballs) = open(dir.path()).expect("open");
        let metadata = LosesFirstAnswer {
            inner: &stored_metadata,
            lost: AtomicBool::new(false),
        };
        let tarballs: &dyn TarballStore = &stored_tarballs;
        let writer = PackageWriter::new(&metadata, tarballs, false);
        let name = PackageName::parse("lost-answer").expect("name");
        let valid = valid_publish(&name, "1.0.0");
        let binding = Binding {
            checked: None,
            decided: None,
        };
        let published = writer
            .publish(&name, &valid, &binding, |_| async {
                Ok::<_, std::convert::Infallible>(None)
            })
            .await
            .expect("the stored version is exactly these bytes");
        assert!(published.confirmed_after_conflict);
        // The bytes stay: the stored version refers to them.
        assert!(
            tarballs
                .get(&valid.live.dist.tarball_key)
                .await
                .expect("read")
                .is_some()
        );
        // Another publish of the same number with other bytes is refused as taken.
        let other = valid_publish_with_readme(&name, "1.0.0");
        let refused = writer
            .publish(&name, &other, &binding, |_| async {
                Ok::<_, std::convert::Infallible>(None)
            })
            .await;
        assert!(matches!(refused, Err(WriteError::VersionTaken { .. })));
    }

    fn valid_publish_with_readme(name: &PackageName, version: &str) -> ValidPublish {
        let mut valid = valid_publish(name, version);
        valid.readme = Some("other".into());
        valid
    }
}
