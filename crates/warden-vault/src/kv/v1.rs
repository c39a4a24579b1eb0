//! KV version 1: one unversioned JSON object per path (`vault/logical/<uuid>/d/<path>`).
//! Read returns it with the mount's lease duration (as Vault does), write replaces it (204),
//! delete removes it (204), list gives one level of keys.

use serde_json::Value;

use super::{list_level, secret_path};
use crate::api::{Operation, Result, VaultError, VaultResponse};
use crate::mounts::MountEntry;
use crate::router::Ctx;

pub(super) async fn handle(ctx: &Ctx<'_>, mount: &MountEntry, rest: &str) -> Result<VaultResponse> {
    let prefix = format!("{}d/", mount.data_prefix());
    let store = &ctx.vault.inner.store;
    match ctx.req.op {
        Operation::List => {
            ctx.require_op()?;
            list_level(ctx.vault, &prefix, rest).await
        }
        Operation::Read => {
            ctx.require_op()?;
            let key = format!("{prefix}{}", secret_path(rest)?);
            let bytes = store.get_cached(&key).await?.ok_or(VaultError::NotFound)?;
            let data: Value = serde_json::from_slice(&bytes)
                .map_err(|e| VaultError::Internal(format!("kv record unreadable: {e}")))?;
            let mut r = VaultResponse::data(data);
            r.lease_duration = mount.lease_ttl();
            Ok(r)
        }
        Operation::Write => {
            let key = format!("{prefix}{}", secret_path(rest)?);
            ctx.require_write(|| async { Ok(store.get_cached(&key).await?.is_some()) })
                .await?;
            if ctx.req.body.is_empty() {
                return Err(VaultError::BadRequest("no data provided".into()));
            }
            let bytes = serde_json::to_vec(&ctx.req.body)
                .map_err(|e| VaultError::Internal(e.to_string()))?;
            let response = VaultResponse::no_content();
            // The write and the request's audit event commit together.
            ctx.transact_audited(
                vec![warden_store::Op::Put { key, value: bytes }],
                response.status().as_u16(),
            )
            .await?;
            Ok(response)
        }
        Operation::Delete => {
            ctx.require_op()?;
            let key = format!("{prefix}{}", secret_path(rest)?);
            store.delete(&key).await?;
            Ok(VaultResponse::no_content())
        }
        Operation::Patch => {
            ctx.require_op()?;
            Err(VaultError::MethodNotAllowed)
        }
    }
}
