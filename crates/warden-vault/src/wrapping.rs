//! Response wrapping: a response is stored in the cubbyhole of a single-use token and the
//! client gets that token (`wrap_info`) instead of the response (`sys/wrapping/…`, and any
//! request carrying `X-Vault-Wrap-TTL`).
//!
//! - A wrapping token is an orphan service token with the one policy `response-wrapping`
//!   (which grants nothing: it serves only `sys/wrapping/unwrap` and `lookup`), `num_uses`
//!   1 and the asked TTL as its TTL and explicit maximum. Its "cubbyhole" is one store record,
//!   `vault/wrapping/<token hash>` (sealed like every value; the token itself is only a keyed
//!   hash), holding the wrapped envelope, its creation time, TTL and path. The token store
//!   deletes the record with the token (revocation, the last use, or expiry when seen).
//! - Wrapping happens in one place, the router, after the handler answered: the handlers know
//!   nothing of it. `sys/wrapping/wrap` and `rewrap` call [`Vault::wrap_response`] directly.
//! - Unwrapping spends the token's use through the token store (serialised there), so two
//!   concurrent unwraps of one token cannot both succeed. Every failure (unknown, expired,
//!   used, not a wrapping token) is the same 400 `wrapping token is not valid or does not
//!   exist`, as Vault answers.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::api::{as_str, field, Operation, Result, VaultError, VaultRequest, VaultResponse};
use crate::router::Ctx;
use crate::token::{NewToken, MAX_TOKEN_BYTES};
use crate::{util, Vault};

const PREFIX: &str = "vault/wrapping/";
/// The policy of wrapping tokens (reserved: `sys/policies/acl` refuses to write it).
pub(crate) const WRAP_POLICY: &str = "response-wrapping";
const INVALID: &str = "wrapping token is not valid or does not exist";

/// The cubbyhole of a wrapping token.
#[derive(Serialize, Deserialize)]
struct Wrapped {
    response: Map<String, Value>,
    creation_time: i64,
    creation_ttl: u64,
    creation_path: String,
    wrapped_accessor: String,
}

/// The store key of a wrapping token's cubbyhole, by the token's hash.
pub(crate) fn record_key(token_hash: &str) -> String {
    format!("{PREFIX}{token_hash}")
}

fn invalid() -> VaultError {
    VaultError::BadRequest(INVALID.into())
}

impl Vault {
    /// Wraps `resp`: stores it in a new single-use token's cubbyhole and answers with
    /// `wrap_info` only. `wrapped_accessor` is the accessor of a token the response creates.
    pub(crate) async fn wrap_response(
        &self,
        resp: VaultResponse,
        ttl: u64,
        creation_path: &str,
    ) -> Result<VaultResponse> {
        let wrapped_accessor = resp
            .auth
            .as_ref()
            .and_then(|a| a.get("accessor"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let mut envelope = resp.into_envelope();
        envelope.remove("request_id");
        self.store_wrapped(envelope, wrapped_accessor, ttl, creation_path)
            .await
    }

    async fn store_wrapped(
        &self,
        response: Map<String, Value>,
        wrapped_accessor: String,
        ttl: u64,
        creation_path: &str,
    ) -> Result<VaultResponse> {
        let tokens = &self.inner.tokens;
        let now = self.now();
        let token = format!("hvs.{}", util::random_base62(40));
        let key = record_key(&tokens.hash("token", &token));
        let record = Wrapped {
            response,
            creation_time: now,
            creation_ttl: ttl,
            creation_path: creation_path.to_owned(),
            wrapped_accessor,
        };
        let bytes = serde_json::to_vec(&record).map_err(|e| VaultError::Internal(e.to_string()))?;
        // The record first: a token without its record would be a wrapping token with nothing
        // inside; a record without a token is unreachable (and removed below on failure).
        self.inner.store.put(&key, &bytes).await?;
        let created = tokens
            .create(NewToken {
                id: Some(token),
                policies: vec![WRAP_POLICY.to_owned()],
                path: creation_path.to_owned(),
                num_uses: 1,
                ttl: Some(ttl),
                explicit_max_ttl: ttl,
                renewable: false,
                ..Default::default()
            })
            .await;
        let (token, entry) = match created {
            Ok(t) => t,
            Err(e) => {
                let _ = self.inner.store.delete(&key).await;
                return Err(e);
            }
        };
        Ok(VaultResponse {
            wrap_info: Some(json!({
                "token": token,
                "accessor": entry.accessor,
                "ttl": ttl,
                "creation_time": util::rfc3339(now),
                "creation_path": creation_path,
                "wrapped_accessor": record.wrapped_accessor,
            })),
            ..Default::default()
        })
    }

    /// The cubbyhole of a live wrapping token, without spending its use.
    async fn peek_wrapped(&self, token: &str) -> Result<Wrapped> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(invalid());
        }
        let tokens = &self.inner.tokens;
        let hash = tokens.hash("token", token);
        let entry = tokens.live(&hash).await?.ok_or_else(invalid)?;
        if entry.policies != [WRAP_POLICY] {
            return Err(invalid());
        }
        let bytes = self
            .inner
            .store
            .get(&record_key(&hash))
            .await?
            .ok_or_else(invalid)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| VaultError::Internal(format!("wrapping record unreadable: {e}")))
    }

    /// Takes the cubbyhole of a wrapping token: spends its one use (revoking it and deleting
    /// the record). Of two concurrent takes, one succeeds.
    async fn take_wrapped(&self, token: &str) -> Result<Wrapped> {
        let record = self.peek_wrapped(token).await?;
        match self.inner.tokens.spend_wrapping(token).await {
            Ok(_) => Ok(record),
            Err(VaultError::PermissionDenied) => Err(invalid()),
            Err(e) => Err(e),
        }
    }
}

/// `sys/wrapping/lookup` (always) and `sys/wrapping/unwrap` with the wrapping token as the
/// request's token (no `token` in the body): served before authentication, as the wrapping
/// token is no ordinary token. `None` for every other request.
pub(crate) async fn unauthenticated(
    vault: &Vault,
    req: &VaultRequest,
) -> Option<Result<VaultResponse>> {
    let lookup = req.path == "sys/wrapping/lookup";
    let unwrap_self = req.path == "sys/wrapping/unwrap" && field(&req.body, "token").is_none();
    if !lookup && !unwrap_self {
        return None;
    }
    Some(unauthenticated_inner(vault, req, lookup).await)
}

async fn unauthenticated_inner(
    vault: &Vault,
    req: &VaultRequest,
    lookup: bool,
) -> Result<VaultResponse> {
    vault.audit_devices_request(req, None)?;
    if req.op != Operation::Write && !(lookup && req.op == Operation::Read) {
        return Err(VaultError::MethodNotAllowed);
    }
    if lookup {
        let token = match field(&req.body, "token") {
            Some(v) => as_str(v, "token")?.to_owned(),
            None => match req.query.get("token").or(req.token.as_ref()) {
                Some(t) => t.clone(),
                None => return Err(VaultError::BadRequest("missing token".into())),
            },
        };
        let w = vault.peek_wrapped(&token).await?;
        return Ok(VaultResponse::data(json!({
            "creation_path": w.creation_path,
            "creation_time": util::rfc3339(w.creation_time),
            "creation_ttl": w.creation_ttl,
        })));
    }
    let token = req.token.as_deref().ok_or_else(invalid)?;
    let w = vault.take_wrapped(token).await?;
    Ok(unwrapped(w))
}

fn unwrapped(w: Wrapped) -> VaultResponse {
    VaultResponse {
        raw: Some(w.response),
        ..Default::default()
    }
}

/// `sys/wrapping/wrap`, `sys/wrapping/unwrap` (token in the body) and `sys/wrapping/rewrap`
/// for an authenticated caller (Vault's `default` policy allows `wrap`, `lookup` and
/// `unwrap`; `rewrap` needs a policy).
pub(crate) async fn handle(ctx: &Ctx<'_>, sub: &str) -> Result<VaultResponse> {
    ctx.require_op()?;
    if ctx.req.op != Operation::Write {
        return Err(VaultError::MethodNotAllowed);
    }
    let body_token = || -> Result<String> {
        let v = field(&ctx.req.body, "token")
            .ok_or_else(|| VaultError::BadRequest("missing token".into()))?;
        Ok(as_str(v, "token")?.to_owned())
    };
    match sub {
        "wrap" => {
            let ttl = ctx.req.wrap_ttl.ok_or_else(|| {
                VaultError::BadRequest(
                    "endpoint requires response wrapping to be used (X-Vault-Wrap-TTL)".into(),
                )
            })?;
            if ctx.req.body.is_empty() {
                return Err(VaultError::BadRequest("no data provided".into()));
            }
            let data = Value::Object(ctx.req.body.clone());
            ctx.vault
                .wrap_response(VaultResponse::data(data), ttl, "sys/wrapping/wrap")
                .await
        }
        "unwrap" => {
            let w = ctx.vault.take_wrapped(&body_token()?).await?;
            Ok(unwrapped(w))
        }
        "rewrap" => {
            let w = ctx.vault.take_wrapped(&body_token()?).await?;
            ctx.vault
                .store_wrapped(
                    w.response,
                    w.wrapped_accessor,
                    w.creation_ttl,
                    &w.creation_path,
                )
                .await
        }
        _ => Err(VaultError::NoHandler(ctx.req.path.clone())),
    }
}

/// Whether a policy name is reserved for wrapping tokens.
pub(crate) fn reserved_policy(name: &str) -> bool {
    name == WRAP_POLICY
}
