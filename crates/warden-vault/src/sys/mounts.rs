//! `sys/mounts`, `sys/mounts/:path[/tune]`, `sys/auth`, `sys/auth/:path[/tune]` and
//! `sys/internal/ui/mounts/:path`.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::api::{as_duration, as_str, Operation, Result, VaultError, VaultResponse};
use crate::mounts::{normalize_mount_path, MountEntry, MountSpec, Table};
use crate::router::{op_cap, Ctx};

pub(super) async fn secrets(ctx: &Ctx<'_>, sub: &str) -> Result<VaultResponse> {
    table_op(ctx, Table::Secrets, sub).await
}

pub(super) async fn auth(ctx: &Ctx<'_>, sub: &str) -> Result<VaultResponse> {
    table_op(ctx, Table::Auth, sub).await
}

async fn table_op(ctx: &Ctx<'_>, table: Table, sub: &str) -> Result<VaultResponse> {
    let mounts = &ctx.vault.inner.mounts;
    ctx.require(&ctx.acl_path(), op_cap(ctx.req.op))?;
    if sub.is_empty() {
        if ctx.req.op != Operation::Read {
            return Err(VaultError::MethodNotAllowed);
        }
        let mut data = Map::new();
        for m in mounts.list(table).iter() {
            data.insert(m.path.clone(), m.describe());
        }
        if table == Table::Secrets {
            data.insert("sys/".into(), system_mount());
        }
        let mut r = VaultResponse::data(Value::Object(data.clone()));
        // Vault repeats the table at the top level for old clients.
        r.top = data;
        return Ok(r);
    }
    if let Some(path) = sub.strip_suffix("/tune") {
        return tune(ctx, table, path).await;
    }
    match ctx.req.op {
        Operation::Read => {
            let p = normalize_mount_path(sub)?;
            let list = mounts.list(table);
            let m = list
                .iter()
                .find(|m| m.path == p)
                .ok_or_else(|| VaultError::BadRequest(format!("no mount at {p:?}")))?;
            Ok(VaultResponse::data(m.describe()))
        }
        Operation::Write => {
            let body = &ctx.req.body;
            let kind = crate::api::field(body, "type")
                .map(|v| as_str(v, "type"))
                .transpose()?
                .ok_or_else(|| VaultError::BadRequest("missing \"type\"".into()))?;
            let description = crate::api::field(body, "description")
                .map(|v| as_str(v, "description"))
                .transpose()?
                .unwrap_or("")
                .to_owned();
            let options = string_map(crate::api::field(body, "options"), "options")?;
            let ttls = config_ttls(crate::api::field(body, "config"))?;
            let spec = MountSpec {
                kind: kind.to_owned(),
                description,
                options,
                ttls,
            };
            mounts.enable(table, sub, spec, ctx.vault.now()).await?;
            Ok(VaultResponse::no_content())
        }
        Operation::Delete => {
            if table == Table::Secrets {
                // Its leases go first (their engine needs the mount's data); a failure keeps
                // the mount, as in Vault.
                let path = normalize_mount_path(sub)?;
                if let Some(m) = mounts.list(table).iter().find(|m| m.path == path) {
                    ctx.vault
                        .inner
                        .leases
                        .revoke_prefix(ctx.vault, &path, false)
                        .await?;
                    ctx.vault.inner.db.drop_mount(&m.uuid);
                }
            }
            mounts.disable(table, sub).await?;
            Ok(VaultResponse::no_content())
        }
        Operation::List | Operation::Patch => Err(VaultError::MethodNotAllowed),
    }
}

async fn tune(ctx: &Ctx<'_>, table: Table, path: &str) -> Result<VaultResponse> {
    let mounts = &ctx.vault.inner.mounts;
    match ctx.req.op {
        Operation::Read => {
            let p = normalize_mount_path(path)?;
            let list = mounts.list(table);
            let m = list
                .iter()
                .find(|m| m.path == p)
                .ok_or_else(|| VaultError::BadRequest(format!("no mount at {p:?}")))?;
            Ok(VaultResponse::data(json!({
                "default_lease_ttl": m.lease_ttl(),
                "max_lease_ttl": if m.max_lease_ttl > 0 { m.max_lease_ttl } else { crate::token::DEFAULT_TTL },
                "description": m.description,
                "force_no_cache": false,
                "options": m.options,
            })))
        }
        Operation::Write => {
            let body = &ctx.req.body;
            let description = crate::api::field(body, "description")
                .map(|v| as_str(v, "description").map(str::to_owned))
                .transpose()?;
            let options = string_map(crate::api::field(body, "options"), "options")?;
            let default_ttl = crate::api::field(body, "default_lease_ttl")
                .map(|v| as_duration(v, "default_lease_ttl"))
                .transpose()?;
            let max_ttl = crate::api::field(body, "max_lease_ttl")
                .map(|v| as_duration(v, "max_lease_ttl"))
                .transpose()?;
            mounts
                .tune(table, path, |m: &mut MountEntry| {
                    if let Some(d) = description {
                        m.description = d;
                    }
                    if let Some(t) = default_ttl {
                        m.default_lease_ttl = t;
                    }
                    if let Some(t) = max_ttl {
                        m.max_lease_ttl = t;
                    }
                    for (k, v) in options {
                        if k == "version" && m.kind == "kv" && m.options.get("version") != Some(&v)
                        {
                            return Err(VaultError::BadRequest(
                                "changing a kv mount's version is not supported by Warden's \
                                 vault: enable a new kv-v2 mount and copy the secrets"
                                    .into(),
                            ));
                        }
                        m.options.insert(k, v);
                    }
                    Ok(())
                })
                .await?;
            Ok(VaultResponse::no_content())
        }
        _ => Err(VaultError::MethodNotAllowed),
    }
}

/// `sys/internal/ui/mounts/:path`: the mount serving `path` (the Vault CLI and hvac use it
/// to tell KV v1 from v2). Answered for a token that can do something under that mount, 403
/// otherwise — the same as for a path with no mount, so mounts are not disclosed.
pub(super) async fn ui_mount(ctx: &Ctx<'_>, sub: &str) -> Result<VaultResponse> {
    if ctx.req.op != Operation::Read {
        return Err(VaultError::MethodNotAllowed);
    }
    let Some((m, _)) = ctx.vault.inner.mounts.find(sub) else {
        return Err(VaultError::PermissionDenied);
    };
    if !ctx.acl.any_under(&m.path) {
        return Err(VaultError::PermissionDenied);
    }
    let mut d = m.describe();
    d["path"] = json!(m.path);
    Ok(VaultResponse::data(d))
}

fn system_mount() -> Value {
    json!({
        "type": "system",
        "description": "system endpoints used for control, policy and debugging",
        "accessor": "system_00000000",
        "uuid": "system",
        "config": { "default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": false },
        "options": null,
        "local": false,
        "seal_wrap": true,
        "external_entropy_access": false,
    })
}

fn string_map(v: Option<&Value>, name: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            if m.len() > 64 {
                return Err(VaultError::BadRequest(format!("{name}: too many entries")));
            }
            for (k, v) in m {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return Err(VaultError::bad_param(name, "an object of strings")),
                };
                out.insert(k.clone(), s);
            }
        }
        Some(_) => return Err(VaultError::bad_param(name, "an object")),
    }
    Ok(out)
}

fn config_ttls(v: Option<&Value>) -> Result<(u64, u64)> {
    let Some(v) = v else { return Ok((0, 0)) };
    let Some(m) = v.as_object() else {
        if v.is_null() {
            return Ok((0, 0));
        }
        return Err(VaultError::bad_param("config", "an object"));
    };
    let d = crate::api::field(m, "default_lease_ttl")
        .map(|v| as_duration(v, "config.default_lease_ttl"))
        .transpose()?
        .unwrap_or(0);
    let x = crate::api::field(m, "max_lease_ttl")
        .map(|v| as_duration(v, "config.max_lease_ttl"))
        .transpose()?
        .unwrap_or(0);
    Ok((d, x))
}
