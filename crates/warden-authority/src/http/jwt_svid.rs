//! `POST /ca/v1/jwt-svid` (with `[authority.ca]`): a workload that holds an X.509-SVID gets a
//! JWT-SVID signed by the token service, so one identity serves mTLS and bearer calls.
//!
//! Body: `{"svid": <PEM chain>, "audience": [..], "iat": <now>, "proof": <base64url>, "ttl"?}`
//! where `proof` is the SVID key's signature over
//! `warden_identity::proof::jwt_svid_message(iat, audience)`. `iat` must be within a minute
//! of the authority's clock, and a proof is accepted once (remembered two minutes), so a
//! captured request cannot be replayed for another token. The token: `iss` (the token
//! service's issuer), `sub` (the SPIFFE ID), `aud`, `iat`, `exp` (`ttl`, default 5 minutes,
//! at most 1 hour), `jti`; header `typ: JWT`, signed with the token service's current key
//! (in its JWKS and in the trust bundle's JWT authorities). Issuance and refusals are audited
//! in the CA's events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use ring::digest::{digest, SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use serde_json::json;
use warden_ca::http::{failed, reply};
use warden_ca::{Ca, CaServiceError};
use warden_identity::proof::{jwt_svid_message, JWT_SVID_REQUEST_SKEW};

use crate::authority::Authority;
use crate::client_auth::Peer;

/// The default JWT-SVID lifetime, seconds.
pub(crate) const DEFAULT_TTL: i64 = 300;
/// The longest JWT-SVID lifetime, seconds.
pub(crate) const MAX_TTL: i64 = 3600;
/// Most proofs remembered against replay.
const MAX_REMEMBERED: usize = 100_000;

/// What the handler needs.
#[derive(Clone)]
pub(crate) struct JwtSvids {
    pub(crate) authority: Arc<Authority>,
    pub(crate) ca: Arc<Ca>,
    /// Proofs seen, by SHA-256, with when they may be forgotten.
    seen: Arc<Mutex<HashMap<[u8; 32], i64>>>,
}

impl JwtSvids {
    pub(crate) fn new(authority: Arc<Authority>, ca: Arc<Ca>) -> Self {
        Self {
            authority,
            ca,
            seen: Arc::default(),
        }
    }

    /// Remembers `proof`; false when it was seen before (or the memory is full).
    fn first_use(&self, proof: &[u8], now: i64) -> bool {
        let mut key = [0u8; 32];
        key.copy_from_slice(digest(&SHA256, proof).as_ref());
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_REMEMBERED / 2 {
            seen.retain(|_, until| *until > now);
        }
        if seen.len() >= MAX_REMEMBERED || seen.contains_key(&key) {
            return false;
        }
        seen.insert(key, now + 2 * JWT_SVID_REQUEST_SKEW);
        true
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    svid: String,
    audience: Vec<String>,
    iat: i64,
    proof: String,
    #[serde(default)]
    ttl: Option<i64>,
}

const ACTION: &str = "jwt_svid.issue";

pub(crate) async fn issue(
    State(s): State<JwtSvids>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Bytes,
) -> Response {
    let source = peer.ip.to_string();
    let source = Some(source.as_str());
    let b: Body = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return failed(CaServiceError::Invalid(format!("body: {e}"))),
    };
    let bad_aud = |a: &String| a.is_empty() || a.len() > 256 || a.chars().any(char::is_control);
    if b.audience.is_empty() || b.audience.len() > 10 || b.audience.iter().any(bad_aud) {
        return failed(CaServiceError::Invalid(
            "audience: one to ten non-empty values without control characters".into(),
        ));
    }
    let ttl = b.ttl.unwrap_or(DEFAULT_TTL);
    if !(30..=MAX_TTL).contains(&ttl) {
        return failed(CaServiceError::Invalid(format!(
            "ttl must be between 30 and {MAX_TTL} seconds"
        )));
    }
    let chain: Vec<Vec<u8>> =
        match CertificateDer::pem_slice_iter(b.svid.as_bytes()).collect::<Result<Vec<_>, _>>() {
            Ok(c) if !c.is_empty() => c.into_iter().map(|c| c.to_vec()).collect(),
            _ => return failed(CaServiceError::Invalid("svid: no CERTIFICATE block".into())),
        };
    let Ok(proof) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b.proof.trim()) else {
        return failed(CaServiceError::Invalid("proof: not base64url".into()));
    };
    let now = s.authority.now();
    if (b.iat - now).abs() > JWT_SVID_REQUEST_SKEW {
        let e = CaServiceError::Refused {
            code: "invalid_proof",
            reason: format!(
                "iat is more than {JWT_SVID_REQUEST_SKEW} s from the authority's clock"
            ),
        };
        return failed(s.ca.refused(ACTION, None, e, source).await);
    }
    let msg = jwt_svid_message(b.iat, &b.audience);
    let entry = match s
        .ca
        .authenticate(ACTION, &chain, &msg, &proof, now, source)
        .await
    {
        Ok(e) => e,
        Err(e) => return failed(e),
    };
    let subject = entry.spiffe_id.to_string();
    if !s.first_use(&proof, now) {
        let e = CaServiceError::Refused {
            code: "invalid_proof",
            reason: "this proof was used already".into(),
        };
        return failed(s.ca.refused(ACTION, Some(subject), e, source).await);
    }
    let mut jti = [0u8; 16];
    rand::fill(&mut jti);
    let jti: String = jti.iter().map(|b| format!("{b:02x}")).collect();
    let aud = if b.audience.len() == 1 {
        json!(b.audience[0])
    } else {
        json!(b.audience)
    };
    let claims = json!({
        "iss": s.authority.settings.issuer,
        "sub": subject,
        "aud": aud,
        "iat": now,
        "exp": now + ttl,
        "jti": jti,
    });
    let token = {
        let ring = s.authority.keys.ring();
        let Some(key) = ring.signer(now) else {
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "no_signing_key" }),
            );
        };
        key.sign_jwt("JWT", &claims)
    };
    let detail = json!({ "aud": b.audience, "exp": now + ttl, "jti": jti, "entry": entry.id });
    if let Err(e) = s.ca.record(ACTION, &subject, detail, source).await {
        return failed(e);
    }
    reply(
        StatusCode::OK,
        json!({ "spiffe_id": subject, "token": token, "expires_at": now + ttl }),
    )
}
