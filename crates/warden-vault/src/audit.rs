//! Every vault request goes to the store's hash-chained audit log: the operation, the path,
//! the status, and who asked as a keyed hash of the token's accessor — never a token, a
//! secret value or a request body. Appends are awaited: a request whose event cannot be
//! written is answered with 500, not served unaudited.

use serde_json::json;
use warden_store::AuditEvent;

use crate::api::{Operation, Result, VaultRequest};
use crate::Vault;

impl Vault {
    pub(crate) async fn audit_request(
        &self,
        req: &VaultRequest,
        accessor: Option<&str>,
        status: u16,
    ) -> Result<()> {
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
        let event = AuditEvent {
            component: "vault".into(),
            action: format!("vault.{op}"),
            actor,
            subject: Some(req.path.clone()),
            outcome: if status < 400 { "success" } else { "failure" }.into(),
            detail: json!({ "status": status }),
            source: None,
        };
        self.inner.store.audit(&event).await?;
        Ok(())
    }
}
