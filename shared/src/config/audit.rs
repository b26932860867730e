//! How long the audit log keeps its events.

use super::{ConfigError, Env};

/// The audit log's settings.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Days the audit log keeps an event (`REGISTRY_AUDIT_RETENTION_DAYS`); `None`: forever.
    pub retention_days: Option<u64>,
}

impl AuditConfig {
    /// Reads the retention: unset, empty or 0 keep events forever.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let retention_days = match env.raw("REGISTRY_AUDIT_RETENTION_DAYS") {
            Some(v) if !v.trim().is_empty() => {
                env.number::<u64>("REGISTRY_AUDIT_RETENTION_DAYS")?
            }
            _ => None,
        };
        Ok(Self {
            retention_days: retention_days.filter(|days| *days > 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::env;

    #[test]
    fn forever_unless_a_positive_number_of_days() {
        let days = |v: &'static str| {
            AuditConfig::from_env(&env(&[("REGISTRY_AUDIT_RETENTION_DAYS", v)]))
                .map(|c| c.retention_days)
        };
        assert_eq!(
            AuditConfig::from_env(&env(&[])).unwrap().retention_days,
            None
        );
        assert_eq!(days("").unwrap(), None);
        assert_eq!(days(" ").unwrap(), None);
        assert_eq!(days("0").unwrap(), None);
        assert_eq!(days("400").unwrap(), Some(400));
        assert_eq!(
            days("a year").unwrap_err().key,
            "REGISTRY_AUDIT_RETENTION_DAYS"
        );
    }
}
