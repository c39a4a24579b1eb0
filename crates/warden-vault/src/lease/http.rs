//! `sys/leases/…` and the legacy `sys/renew`, `sys/revoke`, `sys/revoke-prefix`,
//! `sys/revoke-force`.
//!
//! - `sys/leases/lookup` (PUT `lease_id`): the lease's times; LIST `sys/leases/lookup/:prefix`
//!   (sudo): one level of lease ids.
//! - `sys/leases/renew[/:lease_id]` (`lease_id`, `increment`): capped by the lease's max TTL;
//!   a lease that is not renewable is 400.
//! - `sys/leases/revoke[/:lease_id]` (`lease_id`; `sync` accepted, revocation is always
//!   synchronous): the engine drops the secret, then the lease goes.
//! - `sys/leases/revoke-prefix/:prefix` and `sys/leases/revoke-force/:prefix` (sudo).

use serde_json::json;

use crate::api::{as_duration, as_str, field, Operation, Result, VaultError, VaultResponse};
use crate::router::{op_cap, Ctx};

/// Serves `sys/<rest>` when `rest` is a lease endpoint; `None` when it is not one.
pub(crate) async fn handle(ctx: &Ctx<'_>, rest: &str) -> Option<Result<VaultResponse>> {
    let rest = rest.strip_prefix("leases/").unwrap_or(rest);
    let (verb, arg) = match rest.split_once('/') {
        Some((v, a)) => (v, a),
        None => (rest, ""),
    };
    let r = match verb {
        "lookup" => lookup(ctx, arg).await,
        "renew" => renew(ctx, arg).await,
        "revoke" => revoke(ctx, arg).await,
        "revoke-prefix" => revoke_prefix(ctx, arg, false).await,
        "revoke-force" => revoke_prefix(ctx, arg, true).await,
        _ => return None,
    };
    Some(r)
}

/// Whether `sys/<rest>` is served here.
pub(crate) fn serves(rest: &str) -> bool {
    let verb = |r: &str| {
        let v = r.split('/').next().unwrap_or("");
        matches!(v, "renew" | "revoke" | "revoke-prefix" | "revoke-force")
    };
    match rest.strip_prefix("leases/") {
        Some(r) => verb(r) || r == "lookup" || r.starts_with("lookup/"),
        None => verb(rest),
    }
}

/// The lease id from the path, else the body's `lease_id`.
fn lease_id(ctx: &Ctx<'_>, arg: &str) -> Result<String> {
    if !arg.is_empty() {
        return Ok(arg.to_owned());
    }
    let v = field(&ctx.req.body, "lease_id")
        .ok_or_else(|| VaultError::BadRequest("missing required parameter \"lease_id\"".into()))?;
    let id = as_str(v, "lease_id")?.trim();
    if id.is_empty() {
        return Err(VaultError::BadRequest(
            "missing required parameter \"lease_id\"".into(),
        ));
    }
    Ok(id.to_owned())
}

async fn lookup(ctx: &Ctx<'_>, arg: &str) -> Result<VaultResponse> {
    match ctx.req.op {
        Operation::List => {
            ctx.require(&ctx.acl_path(), op_cap(Operation::List))?;
            let prefix = if arg.is_empty() {
                String::new()
            } else {
                format!("{arg}/")
            };
            let keys = ctx.vault.inner.leases.list_level(&prefix).await?;
            if keys.is_empty() {
                return Err(VaultError::NotFound);
            }
            Ok(VaultResponse::data(json!({ "keys": keys })))
        }
        Operation::Write if arg.is_empty() => {
            ctx.require(&ctx.req.path, op_cap(Operation::Write))?;
            let id = lease_id(ctx, "")?;
            let entry = ctx
                .vault
                .inner
                .leases
                .get(&id)
                .await?
                .filter(|e| e.expire_time > ctx.vault.now())
                .ok_or_else(|| VaultError::BadRequest("invalid lease".into()))?;
            Ok(VaultResponse::data(entry.lookup_data(ctx.vault.now())))
        }
        _ => Err(VaultError::MethodNotAllowed),
    }
}

async fn renew(ctx: &Ctx<'_>, arg: &str) -> Result<VaultResponse> {
    if ctx.req.op != Operation::Write {
        return Err(VaultError::MethodNotAllowed);
    }
    ctx.require(&ctx.req.path, op_cap(Operation::Write))?;
    let id = lease_id(ctx, arg)?;
    let increment = field(&ctx.req.body, "increment")
        .map(|v| as_duration(v, "increment"))
        .transpose()?;
    let entry = ctx
        .vault
        .inner
        .leases
        .renew(ctx.vault, &id, increment)
        .await?;
    // What the renewal granted, from the instant it was made: reading the clock again here
    // could cross a second boundary and answer one second short of the increment.
    let granted_at = entry.last_renewal.unwrap_or_else(|| ctx.vault.now());
    Ok(VaultResponse {
        lease_id: entry.lease_id.clone(),
        renewable: entry.renewable,
        lease_duration: (entry.expire_time - granted_at).max(0) as u64,
        ..Default::default()
    })
}

async fn revoke(ctx: &Ctx<'_>, arg: &str) -> Result<VaultResponse> {
    if ctx.req.op != Operation::Write {
        return Err(VaultError::MethodNotAllowed);
    }
    ctx.require(&ctx.req.path, op_cap(Operation::Write))?;
    let id = lease_id(ctx, arg)?;
    if let Some(v) = field(&ctx.req.body, "sync") {
        crate::api::as_bool(v, "sync")?;
    }
    ctx.vault.inner.leases.revoke(ctx.vault, &id).await?;
    Ok(VaultResponse::no_content())
}

async fn revoke_prefix(ctx: &Ctx<'_>, prefix: &str, force: bool) -> Result<VaultResponse> {
    if ctx.req.op != Operation::Write {
        return Err(VaultError::MethodNotAllowed);
    }
    ctx.require(&ctx.req.path, op_cap(Operation::Write))?;
    if prefix.is_empty() {
        return Err(VaultError::BadRequest(
            "missing the prefix: sys/leases/revoke-prefix/<prefix>".into(),
        ));
    }
    // `database/creds/ro` revokes `database/creds/ro/…`, not `database/creds/ro2/…`.
    let p = format!("{}/", prefix.trim_end_matches('/'));
    ctx.vault
        .inner
        .leases
        .revoke_prefix(ctx.vault, &p, force)
        .await?;
    Ok(VaultResponse::no_content())
}
