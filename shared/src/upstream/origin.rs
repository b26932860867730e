//! Package origin controls: every name is *internal* (published here; the upstream is never
//! consulted for it) or *upstream* (installed through the cache; publishing it here is refused
//! until an admin changes it). The defence against dependency confusion: an upstream package
//! named like an internal one is never served in its place.

use chrono::{DateTime, Utc};

/// Where a name's packages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Published here; never fetched from an upstream.
    Internal,
    /// Fetched from an upstream; not published here.
    Upstream,
}

impl std::str::FromStr for Origin {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "internal" => Ok(Origin::Internal),
            "upstream" => Ok(Origin::Upstream),
            other => Err(format!(
                "'{other}' is not an origin: use internal or upstream"
            )),
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Internal => "internal",
            Origin::Upstream => "upstream",
        })
    }
}

/// An admin's setting of a name's origin (stored under `ORIGIN_NAMESPACE`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OriginSetting {
    /// The origin.
    pub origin: Origin,
    /// Who set it.
    pub set_by: String,
    /// When.
    pub time: DateTime<Utc>,
}

/// How a name's origin was decided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "because", rename_all = "snake_case")]
pub enum OriginReason {
    /// Its scope is one this registry serves: always internal.
    ServedScope,
    /// An admin set it.
    Setting(OriginSetting),
    /// It is published here.
    Published,
    /// It was installed through the cache.
    Ingested,
    /// Nothing yet: reads go upstream; a first publish here makes it internal.
    Undecided,
}

/// A name's origin and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OriginDecision {
    /// The origin, once decided.
    pub origin: Option<Origin>,
    /// Why.
    #[serde(flatten)]
    pub reason: OriginReason,
}

impl OriginDecision {
    /// Decides from what is known of the name, strongest first: a served scope, an admin's
    /// setting, a publish here, an ingestion.
    pub fn decide(
        served_scope: bool,
        setting: Option<OriginSetting>,
        published: bool,
        ingested: bool,
    ) -> Self {
        let (origin, reason) = if served_scope {
            (Some(Origin::Internal), OriginReason::ServedScope)
        } else if let Some(setting) = setting {
            (Some(setting.origin), OriginReason::Setting(setting))
        } else if published {
            (Some(Origin::Internal), OriginReason::Published)
        } else if ingested {
            (Some(Origin::Upstream), OriginReason::Ingested)
        } else {
            (None, OriginReason::Undecided)
        };
        Self { origin, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(origin: Origin) -> OriginSetting {
        OriginSetting {
            origin,
            set_by: "admin".into(),
            time: Utc::now(),
        }
    }

    #[test]
    fn the_strongest_fact_decides() {
        let d = |scope, s, p, i| OriginDecision::decide(scope, s, p, i).origin;
        assert_eq!(
            d(true, Some(setting(Origin::Upstream)), false, true),
            Some(Origin::Internal)
        );
        assert_eq!(
            d(false, Some(setting(Origin::Upstream)), true, false),
            Some(Origin::Upstream)
        );
        assert_eq!(
            d(false, Some(setting(Origin::Internal)), false, true),
            Some(Origin::Internal)
        );
        assert_eq!(d(false, None, true, true), Some(Origin::Internal));
        assert_eq!(d(false, None, false, true), Some(Origin::Upstream));
        assert_eq!(d(false, None, false, false), None);
    }

    #[test]
    fn origins_read_as_the_cli_writes_them() {
        assert_eq!("internal".parse::<Origin>(), Ok(Origin::Internal));
        assert!("public".parse::<Origin>().is_err());
    }
}
