//! Every vault request goes to the store's hash-chained audit log: the operation, the path,
//! the status, and who asked as a keyed hash of the token's accessor — never a token, a
//! secret value or a request body. Appends are awaited: a request whose event cannot be
//! written is answered with 500, not served unaudited. A read's or list's event is awaited
//! until it is in the database's log, not until the disk has flushed it
//! ([`warden_store::Store::audit_logged`]): it survives `kill -9`, and a power loss may take
//! the last moments' read events (the chain stays whole, only shorter), as with Vault's file
//! device; every other request's event is flushed before the answer. A request that writes (a KV write)
//! commits its event in the same store transaction as the write ([`Ctx::transact_audited`]):
//! one group commit instead of two, and no acknowledged write without its event.

use std::sync::atomic::Ordering;

use serde_json::json;
use warden_store::{AuditEvent, Op};

use crate::api::{Operation, Result, VaultRequest};
use crate::router::Ctx;
use crate::Vault;

impl Vault {
    pub(crate) async fn audit_request(
        &self,
        req: &VaultRequest,
        accessor: Option<&str>,
        status: u16,
        read_only: bool,
    ) -> Result<()> {
        if req.audited.load(Ordering::Acquire) {
            // Committed with the request's write (`Ctx::transact_audited`).
            return Ok(());
        }
        let event = self.request_event(req, accessor, status);
        if read_only {
            // A request that changed nothing: its event is logged without waiting for the
            // disk's flush (`Store::audit_logged`: survives a crash of the process, as
            // Vault's file device does), else reads run at the disk's flush rate.
            self.inner.store.audit_logged(&event).await?;
        } else {
            self.inner.store.audit(&event).await?;
        }
        Ok(())
    }

    /// The store-chain event for `req`, answered with `status`.
    pub(crate) fn request_event(
        &self,
        req: &VaultRequest,
        accessor: Option<&str>,
        status: u16,
    ) -> AuditEvent {
        let actor = match accessor {
            Some(a) => format!(
                "accessor:{}",
                &self.inner.tokens.hash("audit-accessor", a)[..16]
            ),
            None => "anonymous".to_owned(),
        };
        let op = match req.op {
            Operation::Read => "read",
            Operation::List => "list",
            Operation::Write => "update",
            Operation::Patch => "patch",
            Operation::Delete => "delete",
        };
        AuditEvent {
            component: "vault".into(),
            action: format!("vault.{op}"),
            actor,
            subject: Some(req.path.clone()),
            outcome: if status < 400 { "success" } else { "failure" }.into(),
            detail: json!({ "status": status }),
            source: None,
        }
    }
}

impl Ctx<'_> {
    /// Applies `ops` and appends this request's audit event (answered with `status`, which
    /// the caller must then answer with) in one store transaction: one commit instead of two,
    /// and no crash can leave the write without its event. The router then appends none. On
    /// an error nothing was written and the router audits the failure as usual.
    pub(crate) async fn transact_audited(&self, ops: Vec<Op>, status: u16) -> Result<()> {
        let event = self
            .vault
            .request_event(self.req, Some(&self.token.accessor), status);
        self.vault.inner.store.transact_audited(ops, &event).await?;
        self.req.audited.store(true, Ordering::Release);
        Ok(())
    }
}
