//! The AppRole auth method (`sys/auth/:path` with `type = "approle"`): roles with token
//! settings and CIDR bindings, their `role-id`, `secret-id`s (TTL, use limit, metadata,
//! accessor), and `login`.
//!
//! Layout under the method's `vault/logical/<uuid>/`: `r/<role>` → [`Role`];
//! `rid/<hmac(role_id)>` → role name; `s/<role>/<hmac(secret_id)>` → [`SecretId`];
//! `a/<role>/<hmac(accessor)>` → the secret id's hash. Secret ids, like tokens, are kept only
//! as keyed hashes. Every login failure answers the same 400 `invalid role or secret ID`, so
//! a caller cannot tell a wrong role id from a wrong, expired, used-up or CIDR-refused secret.
//! CIDR bindings need the client's address; a vault served without connection info refuses
//! CIDR-bound logins (deny by default).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use warden_store::Op;

use crate::api::{
    as_bool, as_duration, as_str, as_str_list, as_u64, field, Operation, Result, VaultError,
    VaultRequest, VaultResponse,
};
use crate::mounts::MountEntry;
use crate::router::Ctx;
use crate::token::NewToken;
use crate::{util, Vault};

const LOGIN_REFUSED: &str = "invalid role or secret ID";

/// A role.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Role {
    name: String,
    role_id: String,
    bind_secret_id: bool,
    secret_id_bound_cidrs: Vec<String>,
    token_bound_cidrs: Vec<String>,
    secret_id_num_uses: u64,
    secret_id_ttl: u64,
    token_policies: Vec<String>,
    token_ttl: u64,
    token_max_ttl: u64,
    token_num_uses: u64,
    token_period: u64,
}

/// A secret id.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SecretId {
    accessor: String,
    metadata: BTreeMap<String, String>,
    created: i64,
    expires: Option<i64>,
    /// Uses left; 0 = unlimited.
    num_uses: u64,
    cidr_list: Vec<String>,
}

struct Keys {
    base: String,
}

impl Keys {
    fn role(&self, name: &str) -> String {
        format!("{}r/{name}", self.base)
    }
    fn role_id(&self, hash: &str) -> String {
        format!("{}rid/{hash}", self.base)
    }
    fn secret(&self, role: &str, hash: &str) -> String {
        format!("{}s/{role}/{hash}", self.base)
    }
    fn accessor(&self, role: &str, hash: &str) -> String {
        format!("{}a/{role}/{hash}", self.base)
    }
}

fn hash(vault: &Vault, domain: &str, v: &str) -> String {
    vault.inner.tokens.hash(domain, v)
}

async fn load<T: for<'de> Deserialize<'de>>(vault: &Vault, key: &str) -> Result<Option<T>> {
    match vault.inner.store.get(key).await? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| VaultError::Internal(format!("approle record unreadable: {e}"))),
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| VaultError::Internal(e.to_string()))
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

fn cidrs(v: &Value, name: &str) -> Result<Vec<String>> {
    let list = as_str_list(v, name)?;
    for c in &list {
        parse_cidr(c)
            .ok_or_else(|| VaultError::BadRequest(format!("{name}: invalid CIDR {c:?}")))?;
    }
    Ok(list)
}

fn parse_cidr(c: &str) -> Option<IpNet> {
    c.parse::<IpNet>()
        .ok()
        .or_else(|| c.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Whether `peer` is inside one of `list` (an empty list allows everyone; no peer, no one).
fn cidr_allows(list: &[String], peer: Option<IpAddr>) -> bool {
    if list.is_empty() {
        return true;
    }
    let Some(ip) = peer else { return false };
    list.iter()
        .filter_map(|c| parse_cidr(c))
        .any(|net| net.contains(&ip))
}

/// `auth/<mount>/…` except `login`.
pub(crate) async fn handle(ctx: &Ctx<'_>, mount: &MountEntry, sub: &str) -> Result<VaultResponse> {
    ctx.require_op()?;
    let keys = Keys {
        base: mount.data_prefix(),
    };
    let parts: Vec<&str> = sub.split('/').collect();
    match parts.as_slice() {
        ["role"] if ctx.req.op == Operation::List => {
            let prefix = format!("{}r/", keys.base);
            let names: Vec<String> = ctx
                .vault
                .inner
                .store
                .list(&prefix)
                .await?
                .into_iter()
                .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
                .collect();
            if names.is_empty() {
                return Err(VaultError::NotFound);
            }
            Ok(VaultResponse::data(json!({ "keys": names })))
        }
        ["role", name] => role(ctx, &keys, name).await,
        ["role", name, "role-id"] => role_id(ctx, &keys, name).await,
        ["role", name, "secret-id"] => secret_id(ctx, &keys, name).await,
        ["role", name, "secret-id", action @ ("lookup" | "destroy")] => {
            let s = field(&ctx.req.body, "secret_id")
                .ok_or_else(|| VaultError::BadRequest("missing secret_id".into()))?;
            let h = hash(ctx.vault, "approle-secret", as_str(s, "secret_id")?);
            secret_action(ctx, &keys, name, &h, action).await
        }
        ["role", name, "secret-id-accessor", action @ ("lookup" | "destroy")] => {
            let a = field(&ctx.req.body, "secret_id_accessor")
                .ok_or_else(|| VaultError::BadRequest("missing secret_id_accessor".into()))?;
            let a = as_str(a, "secret_id_accessor")?;
            let key = keys.accessor(name, &hash(ctx.vault, "approle-accessor", a));
            let h = ctx
                .vault
                .inner
                .store
                .get(&key)
                .await?
                .ok_or_else(|| VaultError::BadRequest("invalid secret_id_accessor".into()))?;
            let h = String::from_utf8(h).map_err(|_| VaultError::Internal("bad index".into()))?;
            secret_action(ctx, &keys, name, &h, action).await
        }
        _ => Err(VaultError::NoHandler(ctx.req.path.clone())),
    }
}

async fn role(ctx: &Ctx<'_>, keys: &Keys, name: &str) -> Result<VaultResponse> {
    check_name(name)?;
    let store = &ctx.vault.inner.store;
    let existing: Option<Role> = load(ctx.vault, &keys.role(name)).await?;
    match ctx.req.op {
        Operation::Read => {
            let r = existing.ok_or(VaultError::NotFound)?;
            Ok(VaultResponse::data(json!({
                "bind_secret_id": r.bind_secret_id,
                "secret_id_bound_cidrs": r.secret_id_bound_cidrs,
                "token_bound_cidrs": r.token_bound_cidrs,
                "secret_id_num_uses": r.secret_id_num_uses,
                "secret_id_ttl": r.secret_id_ttl,
                "token_policies": r.token_policies,
                "policies": r.token_policies,
                "token_ttl": r.token_ttl,
                "token_max_ttl": r.token_max_ttl,
                "token_num_uses": r.token_num_uses,
                "token_period": r.token_period,
                "token_type": "service",
            })))
        }
        Operation::Write => {
            let b = &ctx.req.body;
            let fresh = existing.is_none();
            let mut r = existing.unwrap_or_else(|| Role {
                name: name.to_owned(),
                role_id: uuid(),
                bind_secret_id: true,
                ..Default::default()
            });
            if let Some(v) = field(b, "bind_secret_id") {
                r.bind_secret_id = as_bool(v, "bind_secret_id")?;
            }
            for (k, slot) in [
                ("secret_id_bound_cidrs", &mut r.secret_id_bound_cidrs),
                ("token_bound_cidrs", &mut r.token_bound_cidrs),
            ] {
                if let Some(v) = field(b, k) {
                    *slot = cidrs(v, k)?;
                }
            }
            for k in ["token_policies", "policies"] {
                if let Some(v) = field(b, k) {
                    let mut p: Vec<String> = as_str_list(v, k)?
                        .into_iter()
                        .map(|s| s.to_ascii_lowercase())
                        .collect();
                    p.sort();
                    p.dedup();
                    if p.iter().any(|x| x == "root") {
                        return Err(VaultError::BadRequest(
                            "an AppRole role cannot grant the root policy".into(),
                        ));
                    }
                    r.token_policies = p;
                }
            }
            for (k, slot) in [
                ("secret_id_ttl", &mut r.secret_id_ttl),
                ("token_ttl", &mut r.token_ttl),
                ("token_max_ttl", &mut r.token_max_ttl),
                ("token_period", &mut r.token_period),
            ] {
                if let Some(v) = field(b, k) {
                    *slot = as_duration(v, k)?;
                }
            }
            for (k, slot) in [
                ("secret_id_num_uses", &mut r.secret_id_num_uses),
                ("token_num_uses", &mut r.token_num_uses),
            ] {
                if let Some(v) = field(b, k) {
                    *slot = as_u64(v, k)?;
                }
            }
            if !r.bind_secret_id
                && r.secret_id_bound_cidrs.is_empty()
                && r.token_bound_cidrs.is_empty()
            {
                return Err(VaultError::BadRequest(
                    "at least one constraint should be enabled on the role".into(),
                ));
            }
            let mut ops = vec![Op::Put {
                key: keys.role(name),
                value: encode(&r)?,
            }];
            if fresh {
                ops.push(Op::PutIfAbsent {
                    key: keys.role_id(&hash(ctx.vault, "approle-role", &r.role_id)),
                    value: name.as_bytes().to_vec(),
                });
            }
            store.transact(ops).await?;
            Ok(VaultResponse::no_content())
        }
        Operation::Delete => {
            if let Some(r) = existing {
                let mut ops = vec![
                    Op::Delete {
                        key: keys.role(name),
                    },
                    Op::Delete {
                        key: keys.role_id(&hash(ctx.vault, "approle-role", &r.role_id)),
                    },
                ];
                for p in [
                    format!("{}s/{name}/", keys.base),
                    format!("{}a/{name}/", keys.base),
                ] {
                    for key in store.list(&p).await? {
                        ops.push(Op::Delete { key });
                    }
                }
                for chunk in ops.chunks(500) {
                    store.transact(chunk.to_vec()).await?;
                }
            }
            Ok(VaultResponse::no_content())
        }
        _ => Err(VaultError::MethodNotAllowed),
    }
}

fn uuid() -> String {
    crate::api::uuid_v4()
}

async fn role_id(ctx: &Ctx<'_>, keys: &Keys, name: &str) -> Result<VaultResponse> {
    check_name(name)?;
    let mut r: Role = load(ctx.vault, &keys.role(name))
        .await?
        .ok_or_else(|| VaultError::BadRequest(format!("role {name:?} does not exist")))?;
    match ctx.req.op {
        Operation::Read => Ok(VaultResponse::data(json!({ "role_id": r.role_id }))),
        Operation::Write => {
            let new = field(&ctx.req.body, "role_id")
                .ok_or_else(|| VaultError::BadRequest("missing role_id".into()))?;
            let new = as_str(new, "role_id")?.to_owned();
            if new.is_empty() || new.len() > 256 {
                return Err(VaultError::BadRequest("invalid role_id".into()));
            }
            let old = std::mem::replace(&mut r.role_id, new);
            let ops = vec![
                Op::Delete {
                    key: keys.role_id(&hash(ctx.vault, "approle-role", &old)),
                },
                Op::PutIfAbsent {
                    key: keys.role_id(&hash(ctx.vault, "approle-role", &r.role_id)),
                    value: name.as_bytes().to_vec(),
                },
                Op::Put {
                    key: keys.role(name),
                    value: encode(&r)?,
                },
            ];
            match ctx.vault.inner.store.transact(ops).await {
                Err(warden_store::StoreError::Conflict) => {
                    Err(VaultError::BadRequest("role_id already in use".into()))
                }
                other => other
                    .map(|_| VaultResponse::no_content())
                    .map_err(Into::into),
            }
        }
        _ => Err(VaultError::MethodNotAllowed),
    }
}

/// `role/:name/secret-id`: POST generates one; LIST gives the accessors.
async fn secret_id(ctx: &Ctx<'_>, keys: &Keys, name: &str) -> Result<VaultResponse> {
    check_name(name)?;
    let r: Role = load(ctx.vault, &keys.role(name))
        .await?
        .ok_or_else(|| VaultError::BadRequest(format!("role {name:?} does not exist")))?;
    let store = &ctx.vault.inner.store;
    match ctx.req.op {
        Operation::List => {
            let prefix = format!("{}s/{name}/", keys.base);
            let mut accessors = Vec::new();
            let now = ctx.vault.now();
            for key in store.list(&prefix).await? {
                if let Some(s) = load::<SecretId>(ctx.vault, &key).await? {
                    if s.expires.is_none_or(|e| e > now) {
                        accessors.push(s.accessor);
                    }
                }
            }
            if accessors.is_empty() {
                return Err(VaultError::NotFound);
            }
            Ok(VaultResponse::data(json!({ "keys": accessors })))
        }
        Operation::Write => {
            let b = &ctx.req.body;
            let metadata = match field(b, "metadata") {
                None => BTreeMap::new(),
                Some(Value::String(s)) if s.is_empty() => BTreeMap::new(),
                Some(Value::String(s)) => serde_json::from_str(s)
                    .map_err(|_| VaultError::bad_param("metadata", "a JSON object of strings"))?,
                Some(Value::Object(m)) => m
                    .iter()
                    .map(|(k, v)| {
                        v.as_str()
                            .map(|s| (k.clone(), s.to_owned()))
                            .ok_or_else(|| {
                                VaultError::bad_param("metadata", "an object of strings")
                            })
                    })
                    .collect::<Result<_>>()?,
                Some(_) => return Err(VaultError::bad_param("metadata", "an object of strings")),
            };
            if metadata.len() > 64 {
                return Err(VaultError::BadRequest("metadata: at most 64 keys".into()));
            }
            let cidr_list = match field(b, "cidr_list") {
                Some(v) => cidrs(v, "cidr_list")?,
                None => Vec::new(),
            };
            let ttl = match field(b, "ttl") {
                Some(v) => as_duration(v, "ttl")?,
                None => r.secret_id_ttl,
            };
            let num_uses = match field(b, "num_uses") {
                Some(v) => as_u64(v, "num_uses")?,
                None => r.secret_id_num_uses,
            };
            let now = ctx.vault.now();
            let secret = uuid();
            let accessor = uuid();
            let h = hash(ctx.vault, "approle-secret", &secret);
            let entry = SecretId {
                accessor: accessor.clone(),
                metadata,
                created: now,
                expires: (ttl > 0).then(|| now + ttl as i64),
                num_uses,
                cidr_list,
            };
            store
                .transact(vec![
                    Op::PutIfAbsent {
                        key: keys.secret(name, &h),
                        value: encode(&entry)?,
                    },
                    Op::PutIfAbsent {
                        key: keys.accessor(name, &hash(ctx.vault, "approle-accessor", &accessor)),
                        value: h.into_bytes(),
                    },
                ])
                .await?;
            Ok(VaultResponse::data(json!({
                "secret_id": secret,
                "secret_id_accessor": accessor,
                "secret_id_ttl": ttl,
                "secret_id_num_uses": num_uses,
            })))
        }
        _ => Err(VaultError::MethodNotAllowed),
    }
}

async fn secret_action(
    ctx: &Ctx<'_>,
    keys: &Keys,
    role: &str,
    h: &str,
    action: &str,
) -> Result<VaultResponse> {
    check_name(role)?;
    let key = keys.secret(role, h);
    let s: Option<SecretId> = load(ctx.vault, &key).await?;
    if action == "destroy" {
        if let Some(s) = s {
            ctx.vault
                .inner
                .store
                .transact(vec![
                    Op::Delete { key },
                    Op::Delete {
                        key: keys.accessor(role, &hash(ctx.vault, "approle-accessor", &s.accessor)),
                    },
                ])
                .await?;
        }
        return Ok(VaultResponse::no_content());
    }
    let s = s.ok_or(VaultError::NotFound)?;
    Ok(VaultResponse::data(json!({
        "secret_id_accessor": s.accessor,
        "metadata": s.metadata,
        "creation_time": util::rfc3339(s.created),
        "expiration_time": s.expires.map(util::rfc3339).unwrap_or_default(),
        "secret_id_num_uses": s.num_uses,
        "cidr_list": s.cidr_list,
        "secret_id_ttl": s.expires.map_or(0, |e| (e - s.created).max(0)),
    })))
}

/// `auth/<mount>/login` with `role_id` and `secret_id`: a new orphan token with the role's
/// policies and token settings.
pub(crate) async fn login(
    vault: &Vault,
    mount: &MountEntry,
    req: &VaultRequest,
) -> Result<VaultResponse> {
    if req.op != Operation::Write {
        return Err(VaultError::MethodNotAllowed);
    }
    let refused = || VaultError::BadRequest(LOGIN_REFUSED.into());
    let keys = Keys {
        base: mount.data_prefix(),
    };
    let role_id = field(&req.body, "role_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .ok_or_else(|| VaultError::BadRequest("missing role_id".into()))?;
    let name = vault
        .inner
        .store
        .get(&keys.role_id(&hash(vault, "approle-role", role_id)))
        .await?
        .ok_or_else(refused)?;
    let name = String::from_utf8(name).map_err(|_| refused())?;
    let r: Role = load(vault, &keys.role(&name)).await?.ok_or_else(refused)?;
    if !cidr_allows(&r.secret_id_bound_cidrs, req.peer)
        || !cidr_allows(&r.token_bound_cidrs, req.peer)
    {
        return Err(refused());
    }
    let mut meta = BTreeMap::from([("role_name".to_owned(), name.clone())]);
    if r.bind_secret_id {
        let secret = field(&req.body, "secret_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(refused)?;
        let h = hash(vault, "approle-secret", secret);
        let key = keys.secret(&name, &h);
        // Use counting is a read-modify-write: one at a time per vault (the kv stripes).
        let _guard = vault.inner.kv_locks.lock(&keys.base, &key).await;
        let mut s: SecretId = load(vault, &key).await?.ok_or_else(refused)?;
        let now = vault.now();
        if s.expires.is_some_and(|e| e <= now) || !cidr_allows(&s.cidr_list, req.peer) {
            return Err(refused());
        }
        match s.num_uses {
            0 => {}
            1 => {
                vault
                    .inner
                    .store
                    .transact(vec![
                        Op::Delete { key: key.clone() },
                        Op::Delete {
                            key: keys
                                .accessor(&name, &hash(vault, "approle-accessor", &s.accessor)),
                        },
                    ])
                    .await?;
            }
            _ => {
                s.num_uses -= 1;
                vault.inner.store.put(&key, &encode(&s)?).await?;
            }
        }
        meta.extend(s.metadata.clone());
    }
    let mut policies = r.token_policies.clone();
    policies.push("default".into());
    policies.sort();
    policies.dedup();
    let (token, entry) = vault
        .inner
        .tokens
        .create(NewToken {
            policies,
            path: format!("auth/{}login", mount.path),
            meta,
            display_name: format!("approle-{name}"),
            num_uses: r.token_num_uses,
            ttl: (r.token_ttl > 0).then_some(r.token_ttl),
            explicit_max_ttl: r.token_max_ttl,
            period: r.token_period,
            renewable: true,
            ..Default::default()
        })
        .await?;
    let mut auth = entry.auth_block(&token, vault.now());
    auth["metadata"] = json!(entry.meta);
    Ok(VaultResponse::auth(auth).with_mount_type("approle"))
}
