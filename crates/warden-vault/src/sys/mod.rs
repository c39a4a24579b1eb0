//! `sys/` endpoints served by the catch-all router: mounts, auth methods, policies,
//! capabilities, the UI's mount lookup. (The seal's endpoints — `sys/init`, `sys/unseal`,
//! `sys/seal`, `sys/seal-status`, `sys/health`, … — are explicit routes of their own.)

mod audit;
mod mounts;

use serde_json::{json, Value};

use crate::api::{as_str, as_str_list, Operation, Result, VaultError, VaultResponse};
use crate::policy::store::PolicyStore;
use crate::router::Ctx;

pub(crate) async fn handle(ctx: &Ctx<'_>) -> Result<VaultResponse> {
    let path = ctx.req.path.as_str();
    let rest = path.strip_prefix("sys/").unwrap_or("");
    if rest == "mounts" || rest.starts_with("mounts/") {
        return mounts::secrets(
            ctx,
            rest.trim_start_matches("mounts").trim_start_matches('/'),
        )
        .await;
    }
    if rest == "auth" || rest.starts_with("auth/") {
        return mounts::auth(ctx, rest.trim_start_matches("auth").trim_start_matches('/')).await;
    }
    if rest == "audit" || rest.starts_with("audit/") {
        return audit::devices(
            ctx,
            rest.trim_start_matches("audit").trim_start_matches('/'),
        )
        .await;
    }
    if let Some(sub) = rest.strip_prefix("audit-hash/") {
        return audit::hash(ctx, sub).await;
    }
    if let Some(sub) = rest.strip_prefix("wrapping/") {
        return crate::wrapping::handle(ctx, sub).await;
    }
    if let Some(sub) = rest.strip_prefix("internal/ui/mounts/") {
        return mounts::ui_mount(ctx, sub).await;
    }
    if rest == "policies/acl" || rest.starts_with("policies/acl/") {
        let name = rest
            .trim_start_matches("policies/acl")
            .trim_start_matches('/');
        return policies(ctx, name, false).await;
    }
    if rest == "policy" || rest.starts_with("policy/") {
        let name = rest.trim_start_matches("policy").trim_start_matches('/');
        return policies(ctx, name, true).await;
    }
    if crate::lease::http::serves(rest) {
        if let Some(r) = crate::lease::http::handle(ctx, rest).await {
            return r;
        }
    }
    match rest {
        "capabilities-self" | "capabilities" | "capabilities-accessor" => {
            capabilities(ctx, rest).await
        }
        _ => {
            ctx.require_op()?;
            Err(VaultError::NoHandler(path.to_owned()))
        }
    }
}

/// `sys/policies/acl[/:name]` and the legacy `sys/policy[/:name]` (which names its fields
/// `rules` and lists with `GET`).
async fn policies(ctx: &Ctx<'_>, name: &str, legacy: bool) -> Result<VaultResponse> {
    let store = &ctx.vault.inner.policies;
    if name.is_empty() {
        let listing = ctx.req.op == Operation::List || (legacy && ctx.req.op == Operation::Read);
        if !listing {
            return Err(VaultError::MethodNotAllowed);
        }
        ctx.require(&ctx.acl_path(), crate::router::op_cap(ctx.req.op))?;
        let names = store.list().await?;
        return Ok(if legacy {
            VaultResponse::data(json!({ "policies": names, "keys": names }))
        } else {
            VaultResponse::data(json!({ "keys": names }))
        });
    }
    ctx.require_op()?;
    let name = PolicyStore::check_name(name)?;
    match ctx.req.op {
        Operation::Read => {
            if name == "root" {
                return Ok(VaultResponse::data(
                    json!({ "name": "root", "rules": "", "policy": "" }),
                ));
            }
            let p = store.get(&name).await?.ok_or(VaultError::NotFound)?;
            Ok(VaultResponse::data(if legacy {
                json!({ "name": name, "rules": p.raw })
            } else {
                json!({ "name": name, "policy": p.raw })
            }))
        }
        Operation::Write | Operation::Delete if crate::wrapping::reserved_policy(&name) => Err(
            VaultError::BadRequest(format!("cannot change the {name} policy")),
        ),
        Operation::Write => {
            let field = crate::api::field(&ctx.req.body, "policy")
                .or_else(|| crate::api::field(&ctx.req.body, "rules"))
                .ok_or_else(|| {
                    VaultError::BadRequest("'policy' parameter not supplied or empty".into())
                })?;
            let text = as_str(field, "policy")?;
            let text = decode_policy_text(text);
            store.put(&name, &text).await?;
            Ok(VaultResponse::no_content())
        }
        Operation::Delete => {
            store.delete(&name).await?;
            Ok(VaultResponse::no_content())
        }
        Operation::List | Operation::Patch => Err(VaultError::MethodNotAllowed),
    }
}

/// Vault accepts a policy base64-encoded too; HCL never parses as base64 of itself, so a
/// string that decodes to UTF-8 text containing `path` is taken as encoded.
fn decode_policy_text(text: &str) -> String {
    use base64::Engine as _;
    let t = text.trim();
    if !t.contains(' ') && !t.contains('\n') && !t.is_empty() {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(t) {
            if let Ok(s) = String::from_utf8(bytes) {
                if s.contains("path") {
                    return s;
                }
            }
        }
    }
    text.to_owned()
}

/// `sys/capabilities-self` (`path` or `paths`): the calling token's capabilities; and
/// `sys/capabilities` / `sys/capabilities-accessor` for another token.
async fn capabilities(ctx: &Ctx<'_>, which: &str) -> Result<VaultResponse> {
    if ctx.req.op != Operation::Write {
        return Err(VaultError::MethodNotAllowed);
    }
    ctx.require(&ctx.req.path, crate::policy::Caps::UPDATE)?;
    let mut paths = Vec::new();
    for key in ["paths", "path"] {
        if let Some(v) = ctx.req.body.get(key) {
            paths.extend(as_str_list(v, key)?);
        }
    }
    if paths.is_empty() {
        return Err(VaultError::BadRequest("missing paths".into()));
    }
    if paths.len() > 256 {
        return Err(VaultError::BadRequest("at most 256 paths at once".into()));
    }
    let acl = match which {
        "capabilities-self" => ctx.acl.clone(),
        "capabilities" => {
            let t = crate::api::field(&ctx.req.body, "token")
                .map(|v| as_str(v, "token"))
                .transpose()?
                .ok_or_else(|| VaultError::BadRequest("missing token".into()))?;
            let h = ctx.vault.inner.tokens.hash("token", t);
            let e = ctx
                .vault
                .inner
                .tokens
                .live(&h)
                .await?
                .ok_or_else(|| VaultError::BadRequest("invalid token".into()))?;
            ctx.vault.inner.policies.acl(&e.policies).await?
        }
        _ => {
            let a = crate::api::field(&ctx.req.body, "accessor")
                .map(|v| as_str(v, "accessor"))
                .transpose()?
                .ok_or_else(|| VaultError::BadRequest("missing accessor".into()))?;
            let e = ctx
                .vault
                .inner
                .tokens
                .by_accessor(a)
                .await?
                .ok_or_else(|| VaultError::BadRequest("invalid accessor".into()))?;
            ctx.vault.inner.policies.acl(&e.policies).await?
        }
    };
    let mut data = serde_json::Map::new();
    let mut first: Option<Value> = None;
    for p in &paths {
        let caps: Vec<&str> = if acl.is_root() {
            vec!["root"]
        } else {
            acl.capabilities(p.trim_start_matches('/')).names()
        };
        let v = json!(caps);
        if first.is_none() {
            first = Some(v.clone());
        }
        data.insert(p.clone(), v);
    }
    // Older clients read `capabilities` for a single path.
    if paths.len() == 1 {
        data.insert("capabilities".into(), first.unwrap_or(Value::Null));
    }
    Ok(VaultResponse::data(Value::Object(data)))
}
