//! The audit chain's signed head: what makes deleting the newest records detectable.
//!
//! The store's hash chain shows an edited, deleted or reordered record, but someone who can
//! write the database can delete the newest records and move the head back: what is left is
//! a whole chain. So the authority signs the head (the newest record's seq and hash) every
//! `authority.audit.head_interval` with a key of its own and publishes it
//! (`GET /audit/v1/head`, and an `audit.head` log line). Whoever keeps a signed head (a SIEM,
//! a cron job, another team) can later check it against the log (`warden audit verify
//! --head FILE`): the record at that seq must still be there with that hash.
//!
//! The head is a compact JWS (`typ` [`TYP`], EdDSA), so any JOSE library verifies it with the
//! published key: claims `iss`, `iat` (Unix seconds), `seq` and `hash`. The key is Ed25519,
//! made on first start, sealed in the store at [`KEY_PATH`] (so only a holder of the
//! key-encryption key can sign) and never rotated: a head signed years ago must still verify.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use warden_crypto::jws::{b64url, b64url_decode, Alg, Jwk, SigningKey};
use warden_store::{AuditEvent, Store};

use crate::error::{AuthorityError, Result};

/// Where the audit key is stored (sealed).
pub const KEY_PATH: &str = "audit/head-key";

/// The JWS `typ` of a signed head.
pub const TYP: &str = "warden-audit-head+jwt";

/// Largest signed head accepted for checking (a real one is ~300 bytes).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    pkcs8: String,
    created: i64,
}

/// A signed head as published: the JWS and, for reading without decoding it, its claims and
/// the public key that verifies it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SignedHead {
    /// The compact JWS.
    pub head: String,
    /// The newest record's seq when signed (0: the log was empty).
    pub seq: u64,
    /// That record's hash.
    pub hash: String,
    /// When it was signed (Unix seconds).
    pub iat: i64,
    /// The public key (JWK) that verifies `head`.
    pub key: Value,
}

/// The claims of a head that verified.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct HeadClaims {
    /// The authority's issuer.
    pub iss: String,
    /// When it was signed (Unix seconds).
    pub iat: i64,
    /// The newest record's seq.
    pub seq: u64,
    /// That record's hash.
    pub hash: String,
}

/// Signs the head with the authority's audit key, and keeps the latest signed head.
pub struct HeadSigner {
    key: SigningKey,
    issuer: String,
    latest: ArcSwapOption<SignedHead>,
}

impl std::fmt::Debug for HeadSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadSigner")
            .field("kid", &self.key.kid())
            .finish_non_exhaustive()
    }
}

impl HeadSigner {
    /// Loads the audit key from the store, making it when there is none (instances sharing a
    /// database race on `put_if_absent`, and every one then uses the key that won).
    pub async fn open(store: &Store, issuer: &str, now: i64) -> Result<HeadSigner> {
        for _ in 0..2 {
            if let Some(key) = load_key(store).await? {
                return Ok(HeadSigner {
                    key,
                    issuer: issuer.to_owned(),
                    latest: ArcSwapOption::empty(),
                });
            }
            let key = SigningKey::generate(Alg::EdDSA)
                .map_err(|e| AuthorityError::Config(format!("cannot make the audit key: {e}")))?;
            let stored = StoredKey {
                kid: key.kid().to_owned(),
                pkcs8: b64url(key.pkcs8()),
                created: now,
            };
            let raw = zeroize::Zeroizing::new(
                serde_json::to_vec(&stored).map_err(|e| AuthorityError::Invalid(e.to_string()))?,
            );
            if store.put_if_absent(KEY_PATH, &raw).await? {
                store
                    .audit(&AuditEvent {
                        component: "audit".into(),
                        action: "audit_key.create".into(),
                        actor: "system".into(),
                        subject: Some(key.kid().to_owned()),
                        outcome: "success".into(),
                        detail: json!({"alg": Alg::EdDSA.name(), "use": "audit head"}),
                        source: None,
                    })
                    .await?;
            }
        }
        Err(AuthorityError::Corrupt {
            key: KEY_PATH.into(),
            reason: "written but not readable".into(),
        })
    }

    /// The public key (JWK, with `kid` and `alg`).
    pub fn public_jwk(&self) -> Value {
        self.key.public_jwk()
    }

    /// Signs the store's current head at `now` (Unix seconds), keeps it as the latest and
    /// returns it.
    pub async fn sign(&self, store: &Store, now: i64) -> Result<Arc<SignedHead>> {
        let (seq, hash) = store.audit_head().await?;
        let claims = json!({"iss": self.issuer, "iat": now, "seq": seq, "hash": hash});
        let signed = Arc::new(SignedHead {
            head: self.key.sign_jwt(TYP, &claims),
            seq,
            hash,
            iat: now,
            key: self.public_jwk(),
        });
        self.latest.store(Some(signed.clone()));
        Ok(signed)
    }

    /// The head signed last, if any.
    pub fn latest(&self) -> Option<Arc<SignedHead>> {
        self.latest.load_full()
    }
}

async fn load_key(store: &Store) -> Result<Option<SigningKey>> {
    let Some(raw) = store.get(KEY_PATH).await? else {
        return Ok(None);
    };
    let corrupt = |reason: String| AuthorityError::Corrupt {
        key: KEY_PATH.into(),
        reason,
    };
    let sk: StoredKey = serde_json::from_slice(&raw).map_err(|e| corrupt(e.to_string()))?;
    let der = zeroize::Zeroizing::new(
        b64url_decode(sk.pkcs8.as_bytes()).ok_or_else(|| corrupt("pkcs8".into()))?,
    );
    SigningKey::from_pkcs8(Alg::EdDSA, &der)
        .map(Some)
        .map_err(|e| corrupt(e.to_string()))
}

/// The store's audit key, public part (for `warden audit verify --head`), if one was made.
pub async fn stored_public_jwk(store: &Store) -> Result<Option<Value>> {
    Ok(load_key(store).await?.map(|k| k.public_jwk()))
}

/// Reads a signed head as saved by its keeper: the JSON document `GET /audit/v1/head`
/// answers (its `head` member is used), or the bare compact JWS.
pub fn parse_saved(text: &str) -> std::result::Result<String, String> {
    let text = text.trim();
    if text.len() > MAX_HEAD_BYTES {
        return Err(format!(
            "{} bytes; a signed head is at most {MAX_HEAD_BYTES}",
            text.len()
        ));
    }
    if text.starts_with('{') {
        let v: Value =
            serde_json::from_str(text).map_err(|e| format!("not a signed head document: {e}"))?;
        return v
            .get("head")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| "the document has no \"head\" string".into());
    }
    Ok(text.to_owned())
}

/// Verifies a compact JWS head with `key` (a JWK): the signature, `alg` EdDSA and `typ`
/// [`TYP`]. The claims if it holds, or why not.
pub fn verify(jws: &str, key: &Value) -> std::result::Result<HeadClaims, String> {
    let jwk = Jwk::from_json(key).map_err(|e| format!("the audit key: {e}"))?;
    let mut parts = jws.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a compact JWS (three dot-separated parts)".into());
    };
    let decode = |part: &str, what: &str| {
        b64url_decode(part.as_bytes()).ok_or_else(|| format!("its {what} is not base64url"))
    };
    let header: Value = serde_json::from_slice(&decode(h, "header")?)
        .map_err(|e| format!("its header is not JSON: {e}"))?;
    if header.get("alg").and_then(Value::as_str) != Some(Alg::EdDSA.name()) {
        return Err(format!("its alg is {}, not EdDSA", header["alg"]));
    }
    if header.get("typ").and_then(Value::as_str) != Some(TYP) {
        return Err(format!("its typ is {}, not {TYP}", header["typ"]));
    }
    if let (Some(kid), Some(want)) = (header.get("kid").and_then(Value::as_str), &jwk.kid) {
        if kid != want {
            return Err(format!(
                "signed by key {kid}, but the audit key is {want}: not this authority's head"
            ));
        }
    }
    let sig = decode(s, "signature")?;
    let signed = &jws[..h.len() + 1 + p.len()];
    if !jwk.key.verify(Alg::EdDSA, signed.as_bytes(), &sig) {
        return Err("the signature does not verify with the audit key".into());
    }
    serde_json::from_slice(&decode(p, "payload")?).map_err(|e| format!("its claims: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> HeadSigner {
        HeadSigner {
            key: SigningKey::generate(Alg::EdDSA).unwrap(),
            issuer: "https://authority.test".into(),
            latest: ArcSwapOption::empty(),
        }
    }

    fn head(s: &HeadSigner, seq: u64) -> String {
        s.key.sign_jwt(
            TYP,
            &json!({"iss": s.issuer, "iat": 1, "seq": seq, "hash": "ab".repeat(32)}),
        )
    }

    #[test]
    fn a_head_verifies_with_its_key_and_gives_its_claims() {
        let s = signer();
        let claims = verify(&head(&s, 7), &s.public_jwk()).unwrap();
        assert_eq!(claims.seq, 7);
        assert_eq!(claims.hash, "ab".repeat(32));
        assert_eq!(claims.iss, "https://authority.test");
    }

    #[test]
    fn a_changed_seq_another_key_or_a_truncated_head_is_refused() {
        let s = signer();
        let jws = head(&s, 7);
        // The payload of a head for seq 9 under the signature of the one for seq 7.
        let other = head(&s, 9);
        let mut forged: Vec<&str> = jws.split('.').collect();
        forged[1] = other.split('.').nth(1).unwrap();
        let err = verify(&forged.join("."), &s.public_jwk()).unwrap_err();
        assert!(err.contains("does not verify"), "{err}");

        let err = verify(&jws, &signer().public_jwk()).unwrap_err();
        assert!(err.contains("not this authority's head"), "{err}");

        let err = verify(&jws[..jws.len() - 10], &s.public_jwk()).unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
        let err = verify("a.b", &s.public_jwk()).unwrap_err();
        assert!(err.contains("three"), "{err}");
    }

    #[test]
    fn a_head_of_another_type_is_refused() {
        let s = signer();
        let jwt = s.key.sign_jwt("at+jwt", &json!({"seq": 1, "hash": "x"}));
        let err = verify(&jwt, &s.public_jwk()).unwrap_err();
        assert!(err.contains("typ"), "{err}");
    }

    #[test]
    fn a_saved_head_is_read_from_the_endpoints_document_or_bare() {
        assert_eq!(parse_saved(" a.b.c\n").unwrap(), "a.b.c");
        assert_eq!(
            parse_saved(r#"{"head": "a.b.c", "seq": 1}"#).unwrap(),
            "a.b.c"
        );
        assert!(parse_saved(r#"{"seq": 1}"#).is_err());
        assert!(parse_saved(&"x".repeat(MAX_HEAD_BYTES + 1)).is_err());
    }
}
