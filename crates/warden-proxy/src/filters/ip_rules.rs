//! IP rules: a route's `deny_cidrs` and `allow_cidrs`, checked against the client address
//! (after trusted proxies). Deny first, then allow (an empty allow list allows all); a refusal
//! is `403` ([`Reject::Forbidden`]).

use ipnet::IpNet;

use super::{Exchange, Flow};
use crate::error::Reject;

/// A route's address rules.
pub(crate) struct IpRules {
    pub(crate) allow: Vec<IpNet>,
    pub(crate) deny: Vec<IpNet>,
}

impl IpRules {
    /// No rules: the filter is left out of the chain.
    pub(crate) fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Decides by client address: deny list first, then allow list (empty allows all).
    pub(crate) fn allows(&self, ip: std::net::IpAddr) -> bool {
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }

    pub(crate) fn request(&self, ex: &Exchange<'_>) -> Flow {
        if self.allows(ex.client_ip) {
            Flow::Continue
        } else {
            Flow::Reject(Reject::Forbidden)
        }
    }
}
