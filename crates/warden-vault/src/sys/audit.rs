//! `sys/audit` (list), `sys/audit/:path` (enable, disable) and `sys/audit-hash/:path`: the
//! audit devices of `audit_device.rs`. All need `sudo` besides the normal capability, as in
//! Vault (`sys/audit-hash` needs `update`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::api::{as_bool, as_str, field, Operation, Result, VaultError, VaultResponse};
use crate::router::{op_cap, Ctx};

/// `sys/audit` and `sys/audit/:path`.
pub(super) async fn devices(ctx: &Ctx<'_>, sub: &str) -> Result<VaultResponse> {
    let devices = &ctx.vault.inner.audit_devices;
    ctx.require(&ctx.acl_path(), op_cap(ctx.req.op))?;
    if sub.is_empty() {
        if !matches!(ctx.req.op, Operation::Read | Operation::List) {
            return Err(VaultError::MethodNotAllowed);
        }
        let mut data = Map::new();
        for d in devices.list() {
            data.insert(d.path.clone(), d.describe());
        }
        let mut r = VaultResponse::data(Value::Object(data.clone()));
        // Vault repeats the table at the top level for old clients.
        r.top = data;
        return Ok(r);
    }
    match ctx.req.op {
        Operation::Write => {
            let body = &ctx.req.body;
            let kind = field(body, "type")
                .map(|v| as_str(v, "type"))
                .transpose()?
                .ok_or_else(|| VaultError::BadRequest("missing \"type\"".into()))?;
            let description = field(body, "description")
                .map(|v| as_str(v, "description"))
                .transpose()?
                .unwrap_or("")
                .to_owned();
            let local = field(body, "local")
                .map(|v| as_bool(v, "local"))
                .transpose()?
                .unwrap_or(false);
            let options = match field(body, "options") {
                None => BTreeMap::new(),
                Some(Value::Object(m)) => {
                    if m.len() > 32 {
                        return Err(VaultError::BadRequest("at most 32 options".into()));
                    }
                    let mut out = BTreeMap::new();
                    for (k, v) in m {
                        let s = match v {
                            Value::String(s) => s.clone(),
                            Value::Bool(b) => b.to_string(),
                            Value::Number(n) => n.to_string(),
                            _ => {
                                return Err(VaultError::bad_param(
                                    "options",
                                    "an object of strings",
                                ))
                            }
                        };
                        out.insert(k.clone(), s);
                    }
                    out
                }
                Some(_) => return Err(VaultError::bad_param("options", "an object of strings")),
            };
            devices
                .enable(sub, kind, description, options, local)
                .await?;
            Ok(VaultResponse::no_content())
        }
        Operation::Delete => {
            devices.disable(sub).await?;
            Ok(VaultResponse::no_content())
        }
        _ => Err(VaultError::MethodNotAllowed),
    }
}

/// `sys/audit-hash/:path` (`input`): the string as that device writes it.
pub(super) async fn hash(ctx: &Ctx<'_>, sub: &str) -> Result<VaultResponse> {
    ctx.require(&ctx.req.path, crate::policy::Caps::UPDATE)?;
    if ctx.req.op != Operation::Write {
        return Err(VaultError::MethodNotAllowed);
    }
    let input = field(&ctx.req.body, "input")
        .map(|v| as_str(v, "input"))
        .transpose()?
        .ok_or_else(|| VaultError::BadRequest("the \"input\" parameter is required".into()))?;
    let device = ctx
        .vault
        .inner
        .audit_devices
        .get(sub)
        .ok_or_else(|| VaultError::BadRequest(format!("unknown audit backend {sub:?}")))?;
    Ok(VaultResponse::data(json!({ "hash": device.hash(input) })))
}
