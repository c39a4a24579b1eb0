//! Audit records for the token service: every issuance, exchange, revocation, client change
//! and failed authentication. Records name clients and token ids (`jti`), never secrets or
//! whole tokens.

use serde_json::Value;
use warden_store::{AuditEvent, Store};

use crate::error::Result;

/// The component name in every record.
pub const COMPONENT: &str = "tokens";

/// Writes audit records to the store's shared audit log.
#[derive(Clone)]
pub struct Audit {
    store: Store,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Audit")
    }
}

/// One record, built up before it is written.
#[derive(Debug, Clone)]
pub struct Event {
    action: String,
    actor: String,
    subject: Option<String>,
    outcome: String,
    detail: Value,
    source: Option<String>,
}

impl Event {
    /// `action` (e.g. `token.issue`) by `actor` (a client id, `admin`, `cli`) with `outcome`
    /// (`success`, `failure`).
    pub fn new(action: &str, actor: &str, outcome: &str) -> Self {
        Self {
            action: action.to_owned(),
            actor: actor.to_owned(),
            subject: None,
            outcome: outcome.to_owned(),
            detail: Value::Null,
            source: None,
        }
    }

    /// What the action was about (a token id, a client id).
    pub fn subject(mut self, s: &str) -> Self {
        self.subject = Some(s.to_owned());
        self
    }

    /// Details (no secrets, no tokens).
    pub fn detail(mut self, d: Value) -> Self {
        self.detail = d;
        self
    }

    /// The source address of the request.
    pub fn source(mut self, s: Option<String>) -> Self {
        self.source = s;
        self
    }
}

impl Audit {
    /// Audit records go to `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Writes a record; returns its sequence number.
    pub async fn record(&self, e: Event) -> Result<u64> {
        let ev = AuditEvent {
            component: COMPONENT.into(),
            action: e.action,
            actor: e.actor,
            subject: e.subject,
            outcome: e.outcome,
            detail: e.detail,
            source: e.source,
        };
        Ok(self.store.audit(&ev).await?)
    }

    /// Writes a record whose loss must not fail the request it describes (failed
    /// authentications: the refusal stands either way); a failure is logged.
    pub async fn record_lossy(&self, e: Event) {
        if let Err(err) = self.record(e).await {
            tracing::error!(error = %err, "cannot write audit record");
        }
    }
}
