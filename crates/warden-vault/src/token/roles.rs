//! Token roles (`auth/token/roles/:name`): named presets for `auth/token/create/:name`
//! (allowed and disallowed policies, orphan, renewable, period, explicit max TTL).

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::{as_bool, as_duration, as_str_list, Operation, Result, VaultError, VaultResponse};
use crate::router::Ctx;
use crate::Vault;

const PREFIX: &str = "vault/token/roles/";

/// A token role.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct TokenRole {
    pub(crate) name: String,
    pub(crate) allowed_policies: Vec<String>,
    pub(crate) disallowed_policies: Vec<String>,
    pub(crate) orphan: bool,
    pub(crate) renewable: bool,
    pub(crate) period: u64,
    pub(crate) explicit_max_ttl: u64,
}

pub(crate) async fn get(vault: &Vault, name: &str) -> Result<Option<TokenRole>> {
    check_name(name)?;
    match vault.inner.store.get(&format!("{PREFIX}{name}")).await? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| VaultError::Internal(format!("token role unreadable: {e}"))),
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(VaultError::BadRequest(format!(
            "invalid role name {name:?}"
        )));
    }
    Ok(())
}

pub(crate) async fn handle(ctx: &Ctx<'_>, name: &str) -> Result<VaultResponse> {
    ctx.require_op()?;
    let store = &ctx.vault.inner.store;
    if name.is_empty() {
        if ctx.req.op != Operation::List {
            return Err(VaultError::MethodNotAllowed);
        }
        let keys: Vec<String> = store
            .list(PREFIX)
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(PREFIX).map(str::to_owned))
            .collect();
        if keys.is_empty() {
            return Err(VaultError::NotFound);
        }
        return Ok(VaultResponse::data(json!({ "keys": keys })));
    }
    check_name(name)?;
    let key = format!("{PREFIX}{name}");
    match ctx.req.op {
        Operation::Read => {
            let r = get(ctx.vault, name).await?.ok_or(VaultError::NotFound)?;
            Ok(VaultResponse::data(json!({
                "name": r.name,
                "allowed_policies": r.allowed_policies,
                "disallowed_policies": r.disallowed_policies,
                "orphan": r.orphan,
                "renewable": r.renewable,
                "period": r.period,
                "token_period": r.period,
                "explicit_max_ttl": r.explicit_max_ttl,
                "token_explicit_max_ttl": r.explicit_max_ttl,
                "token_type": "service",
                "path_suffix": "",
            })))
        }
        Operation::Write => {
            let b = &ctx.req.body;
            let mut r = get(ctx.vault, name).await?.unwrap_or(TokenRole {
                name: name.to_owned(),
                renewable: true,
                ..Default::default()
            });
            if let Some(v) = crate::api::field(b, "allowed_policies") {
                r.allowed_policies = lower(as_str_list(v, "allowed_policies")?);
            }
            if let Some(v) = crate::api::field(b, "disallowed_policies") {
                r.disallowed_policies = lower(as_str_list(v, "disallowed_policies")?);
            }
            if let Some(v) = crate::api::field(b, "orphan") {
                r.orphan = as_bool(v, "orphan")?;
            }
            if let Some(v) = crate::api::field(b, "renewable") {
                r.renewable = as_bool(v, "renewable")?;
            }
            for k in ["token_period", "period"] {
                if let Some(v) = b.get(k) {
                    r.period = as_duration(v, k)?;
                }
            }
            for k in ["token_explicit_max_ttl", "explicit_max_ttl"] {
                if let Some(v) = b.get(k) {
                    r.explicit_max_ttl = as_duration(v, k)?;
                }
            }
            let bytes = serde_json::to_vec(&r).map_err(|e| VaultError::Internal(e.to_string()))?;
            store.put(&key, &bytes).await?;
            Ok(VaultResponse::no_content())
        }
        Operation::Delete => {
            store.delete(&key).await?;
            Ok(VaultResponse::no_content())
        }
        _ => Err(VaultError::MethodNotAllowed),
    }
}

fn lower(v: Vec<String>) -> Vec<String> {
    let mut v: Vec<String> = v.into_iter().map(|s| s.to_ascii_lowercase()).collect();
    v.sort();
    v.dedup();
    v
}
