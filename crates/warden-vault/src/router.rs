//! One catch-all route: parse the request once, authenticate the token, record the request
//! on the audit devices, find the backend (`sys/`, `auth/<mount>/`, or a secrets-engine
//! mount), check the ACL, run, wrap the answer if `X-Vault-Wrap-TTL` asks, audit.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;

use crate::api::{Operation, Result, VaultError, VaultRequest, VaultResponse, MAX_REQUEST_BYTES};
use crate::policy::{needs_sudo, Acl, Caps};
use crate::token::TokenEntry;
use crate::Vault;

pub(crate) fn router(vault: Vault) -> Router {
    Router::new()
        .route("/", any(handle))
        .route("/{*path}", any(handle))
        .with_state(vault)
}

async fn handle(State(vault): State<Vault>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let mut vreq = match VaultRequest::parse(
        &parts.method,
        parts.uri.path(),
        parts.uri.query(),
        &parts.headers,
        &bytes,
    ) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    vreq.peer = peer;
    let (result, accessor, mount_type) = vault.dispatch(&vreq).await;
    // Response wrapping, for every endpoint, here and nowhere else (`wrapping.rs`).
    let result = match (result, vreq.wrap_ttl) {
        (Ok(r), Some(ttl)) if !r.no_content && r.wrap_info.is_none() => {
            vault.wrap_response(r, ttl, &vreq.path).await
        }
        (r, _) => r,
    };
    let status = match &result {
        Ok(r) => r.status(),
        Err(e) => e.status(),
    };
    // A read or list that handed out no lease and no token changed nothing worth waiting
    // for the disk over (see `audit.rs`); a dynamic secret's read (a database login) did,
    // and so did a wrapped answer (its wrapping token was created).
    let read_only = matches!(vreq.op, Operation::Read | Operation::List)
        && result.as_ref().map_or(true, |r| {
            r.lease_id.is_empty() && r.auth.is_none() && r.wrap_info.is_none()
        });
    if let Err(e) = vault
        .audit_request(&vreq, accessor.as_deref(), status.as_u16(), read_only)
        .await
    {
        // A request that cannot be audited is refused, not served unaudited.
        return e.into_response();
    }
    let result = result.map(|mut r| {
        if r.mount_type.is_empty() && r.raw.is_none() && r.wrap_info.is_none() {
            mount_type.clone_into(&mut r.mount_type);
        }
        r.request_id.clone_from(&vreq.id);
        r
    });
    if let Err(e) = vault.audit_devices_response(&vreq, &result) {
        // No audit device could record the answer: it is not given.
        return e.into_response();
    }
    match result {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn read_body(body: Body) -> Result<bytes::Bytes> {
    axum::body::to_bytes(body, MAX_REQUEST_BYTES)
        .await
        .map_err(|_| VaultError::TooLarge)
}

/// An authenticated request on its way to a handler.
pub(crate) struct Ctx<'a> {
    pub(crate) vault: &'a Vault,
    pub(crate) req: &'a VaultRequest,
    pub(crate) token: TokenEntry,
    /// The token presented (for `lookup-self`'s `id` and `renew-self`).
    pub(crate) raw_token: &'a str,
    pub(crate) acl: Arc<Acl>,
}

impl Ctx<'_> {
    /// Refuses unless `cap` (plus `sudo` where Vault requires it) is allowed on `path`.
    pub(crate) fn require(&self, path: &str, cap: Caps) -> Result<()> {
        let mut need = cap;
        if needs_sudo(path) {
            need = Caps(need.0 | Caps::SUDO.0);
        }
        if self.acl.allows(path, need) {
            return Ok(());
        }
        // A LIST is also allowed by a rule on the path without its trailing slash.
        if cap == Caps::LIST {
            if let Some(bare) = path.strip_suffix('/') {
                if self.acl.allows(bare, need) {
                    return Ok(());
                }
            }
        }
        Err(VaultError::PermissionDenied)
    }

    /// Refuses unless the request's own operation is allowed on its path (writes need
    /// `update`; see [`Ctx::require_write`] for create-vs-update).
    pub(crate) fn require_op(&self) -> Result<()> {
        let path = self.acl_path();
        self.require(&path, op_cap(self.req.op))
    }

    /// For a write to something that may exist: `create` if it does not, `update` if it
    /// does. `exists` is only asked when the token holds exactly one of the two, so a token
    /// with neither learns nothing.
    pub(crate) async fn require_write<F, Fut>(&self, exists: F) -> Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let path = self.acl_path();
        let can_create = self.require(&path, Caps::CREATE).is_ok();
        let can_update = self.require(&path, Caps::UPDATE).is_ok();
        match (can_create, can_update) {
            (true, true) => Ok(()),
            (false, false) => Err(VaultError::PermissionDenied),
            (c, _) => {
                let e = exists().await?;
                if e != c {
                    Ok(())
                } else {
                    Err(VaultError::PermissionDenied)
                }
            }
        }
    }

    /// The request path as the ACL sees it (a LIST's path ends in `/`, as in Vault).
    pub(crate) fn acl_path(&self) -> String {
        if self.req.op == Operation::List || self.req.trailing_slash {
            format!("{}/", self.req.path)
        } else {
            self.req.path.clone()
        }
    }
}

/// The capability an operation needs.
pub(crate) fn op_cap(op: Operation) -> Caps {
    match op {
        Operation::Read => Caps::READ,
        Operation::List => Caps::LIST,
        Operation::Write => Caps::UPDATE,
        Operation::Patch => Caps::PATCH,
        Operation::Delete => Caps::DELETE,
    }
}

impl Vault {
    /// Runs a request: `(result, accessor of the token if authenticated, mount type)`.
    pub(crate) async fn dispatch(
        &self,
        req: &VaultRequest,
    ) -> (Result<VaultResponse>, Option<String>, &'static str) {
        // AppRole's login is the one path that takes no token.
        if let Some(rest) = req.path.strip_prefix("auth/") {
            if let Some((mount, sub)) = self.inner.mounts.find_auth(rest) {
                if mount.kind == "approle" && sub == "login" {
                    if let Err(e) = self.audit_devices_request(req, None) {
                        return (Err(e), None, "approle");
                    }
                    return (
                        crate::approle::login(self, &mount, req).await,
                        None,
                        "approle",
                    );
                }
            }
        }
        // A wrapping token is presented to `sys/wrapping/unwrap|lookup`, not authenticated.
        if let Some(r) = crate::wrapping::unauthenticated(self, req).await {
            return (r, None, "system");
        }
        let entry = match self.inner.tokens.authenticate(req.token.as_deref()).await {
            Ok(e) => e,
            Err(e) => return (Err(e), None, ""),
        };
        let accessor = Some(entry.accessor.clone());
        // Audit devices record the request before it runs (fail closed).
        if let Err(e) = self.audit_devices_request(req, Some(&entry)) {
            return (Err(e), accessor, "");
        }
        let acl = match self.inner.policies.acl(&entry.policies).await {
            Ok(a) => a,
            Err(e) => return (Err(e), accessor, ""),
        };
        let ctx = Ctx {
            vault: self,
            req,
            token: entry,
            raw_token: req.token.as_deref().unwrap_or(""),
            acl,
        };
        let path = req.path.as_str();
        let (result, mount_type) = if path == "sys" || path.starts_with("sys/") {
            (crate::sys::handle(&ctx).await, "system")
        } else if let Some(rest) = path.strip_prefix("auth/") {
            (self.auth_backend(&ctx, rest).await, "token")
        } else {
            match self.inner.mounts.find(path) {
                Some((mount, rest)) if mount.kind == "database" => (
                    crate::database::handle(&ctx, &mount, &rest).await,
                    "database",
                ),
                Some((mount, rest)) if mount.kind == "transit" => {
                    (crate::transit::handle(&ctx, &mount, &rest).await, "transit")
                }
                Some((mount, rest)) => (crate::kv::handle(&ctx, &mount, &rest).await, "kv"),
                None => {
                    // Deny first, so an unknown path says no more than a forbidden one.
                    let r = ctx
                        .require_op()
                        .and(Err(VaultError::NoHandler(path.to_owned())));
                    (r, "")
                }
            }
        };
        (result, accessor, mount_type)
    }

    async fn auth_backend(&self, ctx: &Ctx<'_>, rest: &str) -> Result<VaultResponse> {
        if rest == "token" || rest.starts_with("token/") {
            let sub = rest
                .strip_prefix("token")
                .unwrap_or("")
                .trim_start_matches('/');
            return crate::token::http::handle(ctx, sub).await;
        }
        if let Some((mount, sub)) = self.inner.mounts.find_auth(rest) {
            if mount.kind == "approle" {
                return crate::approle::handle(ctx, &mount, &sub).await;
            }
        }
        ctx.require_op()?;
        Err(VaultError::NoHandler(ctx.req.path.clone()))
    }
}
