//! The certificate authority's settings (`[authority.ca]`), in seconds, and how they must
//! fit together.

use crate::spiffe::TrustDomain;

/// What the CA issues and how its keys rotate.
#[derive(Debug, Clone)]
pub struct CaSettings {
    /// The trust domain it issues for.
    pub trust_domain: TrustDomain,
    /// An SVID's lifetime unless the workload's registration says otherwise (1 hour).
    pub svid_ttl: i64,
    /// The longest lifetime a registration may ask for (24 hours).
    pub max_svid_ttl: i64,
    /// The signing intermediate's lifetime (7 days); replaced at half of it.
    pub intermediate_ttl: i64,
    /// The root's lifetime (1 year); replaced at half of it.
    pub root_ttl: i64,
    /// How long a new root is in the bundle before it signs (1 day).
    pub root_publish_ahead: i64,
    /// A join token's lifetime unless asked otherwise (10 minutes).
    pub join_token_ttl: i64,
    /// The longest join-token lifetime (1 day).
    pub max_join_token_ttl: i64,
    /// `spiffe_refresh_hint` in the bundle (5 minutes).
    pub refresh_hint: u64,
}

impl CaSettings {
    /// The defaults for `trust_domain`.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            svid_ttl: 3600,
            max_svid_ttl: 24 * 3600,
            intermediate_ttl: 7 * 24 * 3600,
            root_ttl: 365 * 24 * 3600,
            root_publish_ahead: 24 * 3600,
            join_token_ttl: 600,
            max_join_token_ttl: 24 * 3600,
            refresh_hint: 300,
        }
    }

    /// Checks the lifetimes fit together; the error names the setting (as
    /// `authority.ca.<name>`) and says why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |name: &str, why: &str| Err((format!("authority.ca.{name}"), why.to_owned()));
        for (name, v) in [
            ("svid_ttl", self.svid_ttl),
            ("max_svid_ttl", self.max_svid_ttl),
            ("intermediate_ttl", self.intermediate_ttl),
            ("root_ttl", self.root_ttl),
            ("join_token_ttl", self.join_token_ttl),
            ("max_join_token_ttl", self.max_join_token_ttl),
        ] {
            if v < 1 {
                return err(name, "must be at least 1 s");
            }
        }
        if self.svid_ttl > self.max_svid_ttl {
            return err("svid_ttl", "must not exceed max_svid_ttl");
        }
        // An intermediate replaced at half its life still outlives the SVIDs it signed.
        if self.max_svid_ttl.saturating_mul(2) > self.intermediate_ttl {
            return err("intermediate_ttl", "must be at least twice max_svid_ttl");
        }
        if self.intermediate_ttl.saturating_mul(2) > self.root_ttl {
            return err("root_ttl", "must be at least twice intermediate_ttl");
        }
        if self.root_publish_ahead < 0 || self.root_publish_ahead.saturating_mul(2) > self.root_ttl
        {
            return err(
                "root_publish_ahead",
                "must be between 0 and half of root_ttl",
            );
        }
        if self.join_token_ttl > self.max_join_token_ttl {
            return err("join_token_ttl", "must not exceed max_join_token_ttl");
        }
        Ok(())
    }
}
