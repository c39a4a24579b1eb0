//! Who may use the admin listener (`admin.token`, read at start).
//!
//! - Probes (`/healthz`, `/readyz`), the internal tokens' public keys
//!   (`/.well-known/jwks.json`, for the services that verify them) and the console's static
//!   files are open: they hold nothing to protect, and the console's page has to load to ask
//!   for the token.
//! - With a token, everything else needs `Authorization: Bearer <token>` (401 otherwise),
//!   `/metrics` included. The comparison is of SHA-256 digests in constant time: neither the
//!   token's bytes nor its length show in the time a refusal takes.
//! - Without one, on loopback, nothing is asked (the default, as before). On any other
//!   address `/config`, `/upstreams`, `/reload` and the console's data answer 403 until a
//!   token is set, while `/metrics` stays open so that existing scrapes keep working.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// The admin listener's access rule.
#[derive(Clone)]
pub struct AdminAccess {
    /// SHA-256 of the token, when one is set.
    token: Option<[u8; 32]>,
    loopback: bool,
}

impl std::fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAccess")
            .field("token", &self.token.map(|_| "**REDACTED**"))
            .field("loopback", &self.loopback)
            .finish()
    }
}

/// What a path needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Never a token.
    Open,
    /// The token when one is set; open otherwise, wherever the listener is.
    Scrape,
    /// The token when one is set; without one, only on loopback.
    Data,
}

impl AdminAccess {
    /// The rule for a listener on `address`, with `token` (its bytes, without line ending).
    pub fn new(address: SocketAddr, token: Option<&[u8]>) -> Self {
        AdminAccess {
            token: token.map(warden_crypto::jws::sha256),
            loopback: address.ip().is_loopback(),
        }
    }

    /// Whether the console must ask for a token.
    pub fn needs_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether a request for `path` with `headers` may go on.
    pub(crate) fn verdict(&self, path: &str, headers: &HeaderMap) -> Verdict {
        let allowed = match (kind(path), self.token.is_some()) {
            (Kind::Open, _) | (Kind::Scrape, false) => true,
            (Kind::Data, false) => self.loopback,
            (_, true) => self.bearer_matches(headers),
        };
        match (allowed, self.token.is_some()) {
            (true, _) => Verdict::Allowed,
            (false, true) => Verdict::Unauthorized,
            (false, false) => Verdict::Forbidden,
        }
    }

    /// What the console's page asks before anything else (`/console/api/session`, open): whether
    /// it needs a token, and whether the one it sent (if any) opens the data.
    pub(crate) fn session(&self, headers: &HeaderMap) -> serde_json::Value {
        let verdict = self.verdict("/console/api/overview", headers);
        serde_json::json!({
            "token_required": self.token.is_some(),
            "authorized": verdict == Verdict::Allowed,
            "forbidden": verdict == Verdict::Forbidden,
            "message": match verdict {
                Verdict::Allowed => "",
                Verdict::Unauthorized => UNAUTHORIZED,
                Verdict::Forbidden => FORBIDDEN,
            },
        })
    }

    fn bearer_matches(&self, headers: &HeaderMap) -> bool {
        let Some(want) = &self.token else {
            return false;
        };
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
        else {
            return false;
        };
        warden_crypto::ct_eq(&warden_crypto::jws::sha256(given.as_bytes()), want)
    }
}

/// What [`AdminAccess::verdict`] decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Go on.
    Allowed,
    /// 401: the token is missing or wrong.
    Unauthorized,
    /// 403: no token is set and the listener is not on loopback.
    Forbidden,
}

const UNAUTHORIZED: &str = "this admin route needs `Authorization: Bearer <admin.token>`";
const FORBIDDEN: &str = "the admin listener is not on loopback: set `admin.token` (env: or \
                         file:) to use /config, /upstreams, /reload and the console's data";

fn kind(path: &str) -> Kind {
    match path {
        "/healthz" | "/readyz" | "/.well-known/jwks.json" | "/console/api/session" => Kind::Open,
        "/metrics" => Kind::Scrape,
        p if crate::console::is_static(p) => Kind::Open,
        _ => Kind::Data,
    }
}

/// The middleware: lets the request through or answers 401/403 (JSON, no-store).
pub(crate) async fn guard(
    State(access): State<Arc<AdminAccess>>,
    req: Request,
    next: Next,
) -> Response {
    let (status, message) = match access.verdict(req.uri().path(), req.headers()) {
        Verdict::Allowed => return next.run(req).await,
        Verdict::Unauthorized => (StatusCode::UNAUTHORIZED, UNAUTHORIZED),
        Verdict::Forbidden => (StatusCode::FORBIDDEN, FORBIDDEN),
    };
    let mut resp = (
        status,
        Json(serde_json::json!({"error": status.as_u16(), "message": message})),
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"warden-admin\""),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_classified() {
        assert_eq!(kind("/healthz"), Kind::Open);
        assert_eq!(kind("/readyz"), Kind::Open);
        assert_eq!(kind("/console/api/session"), Kind::Open);
        assert_eq!(kind("/console/"), Kind::Open);
        assert_eq!(kind("/console/console.js"), Kind::Open);
        assert_eq!(kind("/metrics"), Kind::Scrape);
        for p in [
            "/config",
            "/upstreams",
            "/reload",
            "/console/api/events",
            "/nosuch",
        ] {
            assert_eq!(kind(p), Kind::Data, "{p}");
        }
    }

    #[test]
    fn the_token_is_not_kept_and_not_shown() {
        let a = AdminAccess::new(
            "0.0.0.0:9901".parse().unwrap(),
            Some(b"s3cret-admin-token-123"),
        );
        let shown = format!("{a:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
        assert!(!a.loopback);
        assert!(a.needs_token());
        assert!(AdminAccess::new("[::1]:9901".parse().unwrap(), None).loopback);
    }
}
