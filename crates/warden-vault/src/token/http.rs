//! `auth/token/…`: create (and `create-orphan`, `create/:role`), lookup, renew and revoke
//! (by token, self or accessor), `revoke-orphan`, `accessors`, `roles/`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::roles::{self, TokenRole};
use super::{NewToken, TokenEntry};
use crate::api::{
    as_bool, as_duration, as_str, as_str_list, as_u64, Operation, Result, VaultError, VaultResponse,
};
use crate::policy::Caps;
use crate::router::Ctx;

pub(crate) async fn handle(ctx: &Ctx<'_>, sub: &str) -> Result<VaultResponse> {
    if sub == "roles" || sub.starts_with("roles/") {
        return roles::handle(ctx, sub.trim_start_matches("roles").trim_start_matches('/')).await;
    }
    if let Some(role) = sub.strip_prefix("create/") {
        ctx.require_op()?;
        expect_write(ctx)?;
        return create(ctx, Some(role), false).await;
    }
    ctx.require_op()?;
    let op = ctx.req.op;
    match sub {
        "create" => {
            expect_write(ctx)?;
            create(ctx, None, false).await
        }
        "create-orphan" => {
            expect_write(ctx)?;
            create(ctx, None, true).await
        }
        "lookup-self" if matches!(op, Operation::Read | Operation::Write) => Ok(
            VaultResponse::data(ctx.token.lookup_data(ctx.raw_token, ctx.vault.now())),
        ),
        "lookup" if matches!(op, Operation::Read | Operation::Write) => {
            let t = token_param(ctx)?;
            let e = by_token(ctx, &t).await?;
            Ok(VaultResponse::data(e.lookup_data(&t, ctx.vault.now())))
        }
        "lookup-accessor" => {
            expect_write(ctx)?;
            let e = by_accessor(ctx).await?;
            Ok(VaultResponse::data(e.lookup_data("", ctx.vault.now())))
        }
        "renew-self" => {
            expect_write(ctx)?;
            let e = renew(ctx, ctx.token.clone()).await?;
            Ok(VaultResponse::auth(
                e.auth_block(ctx.raw_token, ctx.vault.now()),
            ))
        }
        "renew" => {
            expect_write(ctx)?;
            let t = token_param(ctx)?;
            let e = by_token(ctx, &t).await?;
            let e = renew(ctx, e).await?;
            Ok(VaultResponse::auth(e.auth_block(&t, ctx.vault.now())))
        }
        "renew-accessor" => {
            expect_write(ctx)?;
            let e = by_accessor(ctx).await?;
            let e = renew(ctx, e).await?;
            Ok(VaultResponse::auth(e.auth_block("", ctx.vault.now())))
        }
        "revoke-self" => {
            expect_write(ctx)?;
            ctx.vault.inner.tokens.revoke_tree(&ctx.token.hash).await?;
            Ok(VaultResponse::no_content())
        }
        "revoke" => {
            expect_write(ctx)?;
            let t = token_param(ctx)?;
            // Revoking an unknown token succeeds, as in Vault.
            let h = ctx.vault.inner.tokens.hash("token", &t);
            ctx.vault.inner.tokens.revoke_tree(&h).await?;
            Ok(VaultResponse::no_content())
        }
        "revoke-accessor" => {
            expect_write(ctx)?;
            let e = by_accessor(ctx).await?;
            ctx.vault.inner.tokens.revoke_tree(&e.hash).await?;
            Ok(VaultResponse::no_content())
        }
        "revoke-orphan" => {
            expect_write(ctx)?;
            let t = token_param(ctx)?;
            let h = ctx.vault.inner.tokens.hash("token", &t);
            ctx.vault.inner.tokens.revoke_orphan(&h).await?;
            Ok(VaultResponse::no_content())
        }
        "tidy" => {
            expect_write(ctx)?;
            let n = ctx.vault.inner.tokens.tidy().await?;
            tracing::info!(removed = n, "vault: token tidy removed expired tokens");
            // Vault answers 202 and tidies in the background; this one has finished.
            Ok(VaultResponse {
                warnings: vec![format!(
                    "Tidy operation successfully completed: {n} expired token(s) removed."
                )],
                status: Some(axum::http::StatusCode::ACCEPTED),
                ..Default::default()
            })
        }
        "accessors" if op == Operation::List => {
            let keys = ctx.vault.inner.tokens.accessors().await?;
            Ok(VaultResponse::data(json!({ "keys": keys })))
        }
        "lookup-self" | "lookup" | "accessors" => Err(VaultError::MethodNotAllowed),
        _ => Err(VaultError::NoHandler(ctx.req.path.clone())),
    }
}

fn expect_write(ctx: &Ctx<'_>) -> Result<()> {
    if ctx.req.op == Operation::Write {
        Ok(())
    } else {
        Err(VaultError::MethodNotAllowed)
    }
}

fn token_param(ctx: &Ctx<'_>) -> Result<String> {
    let v = ctx
        .req
        .input("token")
        .ok_or_else(|| VaultError::BadRequest("missing token".into()))?;
    let t = as_str(&v, "token")?;
    if t.is_empty() {
        return Err(VaultError::BadRequest("missing token".into()));
    }
    Ok(t.to_owned())
}

/// A token named in a request; an unknown one is 400 "bad token", as in Vault.
async fn by_token(ctx: &Ctx<'_>, token: &str) -> Result<TokenEntry> {
    let h = ctx.vault.inner.tokens.hash("token", token);
    ctx.vault
        .inner
        .tokens
        .live(&h)
        .await?
        .ok_or_else(|| VaultError::BadRequest("bad token".into()))
}

async fn by_accessor(ctx: &Ctx<'_>) -> Result<TokenEntry> {
    let v = ctx
        .req
        .input("accessor")
        .ok_or_else(|| VaultError::BadRequest("missing accessor".into()))?;
    let a = as_str(&v, "accessor")?;
    ctx.vault
        .inner
        .tokens
        .by_accessor(a)
        .await?
        .ok_or_else(|| VaultError::BadRequest("invalid accessor".into()))
}

async fn renew(ctx: &Ctx<'_>, e: TokenEntry) -> Result<TokenEntry> {
    let inc = crate::api::field(&ctx.req.body, "increment")
        .map(|v| as_duration(v, "increment"))
        .transpose()?;
    ctx.vault.inner.tokens.renew(e, inc).await
}

/// Normalised policy names: trimmed, lower-cased, deduplicated, sorted.
fn normalize_policies(list: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = list
        .into_iter()
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| !p.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

async fn create(
    ctx: &Ctx<'_>,
    role_name: Option<&str>,
    orphan_path: bool,
) -> Result<VaultResponse> {
    let body = &ctx.req.body;
    let parent = &ctx.token;
    let is_root = parent.is_root();
    let has_sudo = ctx.acl.allows("auth/token/create", Caps::SUDO);
    let role: Option<TokenRole> = match role_name {
        Some(n) => Some(
            roles::get(ctx.vault, n)
                .await?
                .ok_or_else(|| VaultError::BadRequest(format!("unknown role {n}")))?,
        ),
        None => None,
    };
    for refused in ["entity_alias", "policy_groups"] {
        if body.contains_key(refused) {
            return Err(VaultError::BadRequest(format!(
                "{refused:?} is not supported by Warden's vault (no identity entities)"
            )));
        }
    }
    if let Some(t) = crate::api::field(body, "type") {
        let t = as_str(t, "type")?;
        if t != "service" && t != "default" && !t.is_empty() {
            return Err(VaultError::BadRequest(format!(
                "token type {t:?} is not supported: Warden's vault issues service tokens"
            )));
        }
    }
    let id = crate::api::field(body, "id")
        .map(|v| as_str(v, "id").map(str::to_owned))
        .transpose()?
        .filter(|s| !s.is_empty());
    if id.is_some() && !is_root && !has_sudo {
        return Err(VaultError::BadRequest(
            "root or sudo privileges required to specify token id".into(),
        ));
    }
    let no_parent = crate::api::field(body, "no_parent")
        .map(|v| as_bool(v, "no_parent"))
        .transpose()?
        .unwrap_or(false);
    if no_parent && !is_root && !has_sudo {
        return Err(VaultError::BadRequest(
            "root or sudo privileges required to create orphan token".into(),
        ));
    }
    let orphan = orphan_path || no_parent || role.as_ref().is_some_and(|r| r.orphan);
    if parent.spent && !orphan {
        return Err(VaultError::BadRequest(
            "a token on its last use cannot create child tokens".into(),
        ));
    }
    let no_default = crate::api::field(body, "no_default_policy")
        .map(|v| as_bool(v, "no_default_policy"))
        .transpose()?
        .unwrap_or(false);
    let asked = crate::api::field(body, "policies")
        .map(|v| as_str_list(v, "policies"))
        .transpose()?
        .map(normalize_policies);
    let mut policies = match (&role, asked) {
        (Some(r), Some(p)) => {
            if !r.allowed_policies.is_empty() {
                if let Some(bad) = p
                    .iter()
                    .find(|x| *x != "default" && !r.allowed_policies.contains(x))
                {
                    return Err(VaultError::BadRequest(format!(
                        "token policies ({bad}) must be subset of the role's allowed policies"
                    )));
                }
            }
            p
        }
        (Some(r), None) if !r.allowed_policies.is_empty() => r.allowed_policies.clone(),
        (Some(_), None) => parent
            .policies
            .iter()
            .filter(|p| *p != "root")
            .cloned()
            .collect(),
        (None, Some(p)) => p,
        (None, None) => parent.policies.clone(),
    };
    if let Some(r) = &role {
        if let Some(bad) = policies.iter().find(|p| r.disallowed_policies.contains(p)) {
            return Err(VaultError::BadRequest(format!(
                "token policy {bad:?} is disallowed by this role"
            )));
        }
        if policies.iter().any(|p| p == "root") {
            return Err(VaultError::BadRequest(
                "a role cannot create root tokens".into(),
            ));
        }
    } else if !is_root {
        // A token cannot raise its own policies: children get a subset.
        if let Some(bad) = policies
            .iter()
            .find(|p| *p != "default" && !parent.policies.contains(p))
        {
            return Err(VaultError::BadRequest(format!(
                "child policies must be subset of parent: {bad:?} is not held by the caller"
            )));
        }
    }
    if !no_default && !policies.iter().any(|p| p == "root" || p == "default") {
        policies.push("default".into());
    }
    if no_default {
        policies.retain(|p| p != "default");
    }
    policies = normalize_policies(policies);
    let ttl = crate::api::field(body, "ttl")
        .map(|v| as_duration(v, "ttl"))
        .transpose()?;
    let mut explicit_max_ttl = crate::api::field(body, "explicit_max_ttl")
        .map(|v| as_duration(v, "explicit_max_ttl"))
        .transpose()?
        .unwrap_or(0);
    let mut period = crate::api::field(body, "period")
        .map(|v| as_duration(v, "period"))
        .transpose()?
        .unwrap_or(0);
    if period > 0 && role.is_none() && !is_root && !has_sudo {
        return Err(VaultError::BadRequest(
            "root or sudo privileges required to create periodic token".into(),
        ));
    }
    let mut renewable = crate::api::field(body, "renewable")
        .map(|v| as_bool(v, "renewable"))
        .transpose()?
        .unwrap_or(true);
    if let Some(r) = &role {
        if r.period > 0 {
            period = r.period;
        }
        if r.explicit_max_ttl > 0 {
            explicit_max_ttl = if explicit_max_ttl > 0 {
                explicit_max_ttl.min(r.explicit_max_ttl)
            } else {
                r.explicit_max_ttl
            };
        }
        renewable = renewable && r.renewable;
    }
    let num_uses = crate::api::field(body, "num_uses")
        .map(|v| {
            if v.as_i64().is_some_and(|n| n < 0) {
                Err(VaultError::BadRequest(
                    "number of uses cannot be negative".into(),
                ))
            } else {
                as_u64(v, "num_uses")
            }
        })
        .transpose()?
        .unwrap_or(0);
    let display_name = crate::api::field(body, "display_name")
        .map(|v| as_str(v, "display_name").map(sanitize_display_name))
        .transpose()?
        .unwrap_or_default();
    let meta = match crate::api::field(body, "meta") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(VaultError::bad_param("meta", "an object of strings")),
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(VaultError::bad_param("meta", "an object of strings")),
    };
    let path = match role_name {
        Some(r) => format!("auth/token/create/{r}"),
        None if orphan_path => "auth/token/create-orphan".to_owned(),
        None => "auth/token/create".to_owned(),
    };
    let (token, entry) = ctx
        .vault
        .inner
        .tokens
        .create(NewToken {
            id,
            policies,
            parent: (!orphan).then(|| parent.clone()),
            path,
            meta,
            display_name,
            num_uses,
            ttl,
            explicit_max_ttl,
            period,
            renewable,
            role: role.map(|r| r.name),
        })
        .await?;
    Ok(VaultResponse::auth(
        entry.auth_block(&token, ctx.vault.now()),
    ))
}

/// Vault keeps display names to `[a-z0-9-]` (lower-cased), at most 64 characters.
fn sanitize_display_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}
