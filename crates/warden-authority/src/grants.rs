//! The grants at `/oauth2/token`: `client_credentials` (RFC 6749 §4.4) and token exchange
//! (RFC 8693). Both answer with an RFC 9068 JWT access token.

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::audit::Event;
use crate::authority::Authority;
use crate::client_auth::{Authenticated, Peer};
use crate::clients::{GRANT_CLIENT_CREDENTIALS, GRANT_TOKEN_EXCHANGE};
use crate::error::{OAuthError, Refusal};
use crate::form::Params;
use crate::token_cache::{Introspected, TokenCache};
use crate::tokens::{self, audiences_of, scopes_of, Grant, Minted};
use warden_telemetry::SecurityEvent;

/// RFC 8693 token type of access tokens.
pub const TOKEN_TYPE_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 8693 token type of JWTs.
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The introspection answer for a token that is not active, or that the caller may not see.
const INACTIVE: &[u8] = br#"{"active":false}"#;

fn err(r: Refusal) -> OAuthError {
    r.into()
}

/// Parses `scope` (space-separated scope tokens, RFC 6749 §3.3).
fn requested_scopes(p: &Params) -> Result<Option<Vec<String>>, OAuthError> {
    let Some(s) = p.get("scope") else {
        return Ok(None);
    };
    let mut out: Vec<String> = Vec::new();
    for w in s.split(' ').filter(|w| !w.is_empty()) {
        let ok = w
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
        if !ok {
            return Err(err(Refusal::ScopeSyntax));
        }
        if !out.iter().any(|x| x == w) {
            out.push(w.to_owned());
        }
    }
    Ok(Some(out))
}

/// Parses `audience` (space-separated, RFC 8693) and `resource` (RFC 8707).
fn requested_audiences(p: &Params) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for a in p
        .get("audience")
        .into_iter()
        .flat_map(|s| s.split(' '))
        .chain(p.get("resource"))
        .filter(|a| !a.is_empty())
    {
        if !out.iter().any(|x| x == a) {
            out.push(a.to_owned());
        }
    }
    (!out.is_empty()).then_some(out)
}

fn subset(want: &[String], allowed: &[String]) -> bool {
    want.iter().all(|w| allowed.contains(w))
}

fn response(m: &Minted, g: &Grant, exchange: bool) -> Value {
    let mut v = json!({
        "access_token": m.token,
        "token_type": "Bearer",
        "expires_in": g.lifetime,
    });
    if !g.scopes.is_empty() {
        v["scope"] = g.scopes.join(" ").into();
    }
    if exchange {
        v["issued_token_type"] = TOKEN_TYPE_ACCESS.into();
    }
    v
}

impl Authority {
    fn lifetime_for(&self, a: &Authenticated) -> i64 {
        a.client
            .token_lifetime
            .unwrap_or(self.settings.token_lifetime)
            .min(self.settings.max_token_lifetime)
    }

    fn mint(&self, g: &Grant, now: i64) -> Result<Minted, OAuthError> {
        tokens::mint(&self.keys.ring(), &self.settings.issuer, g, now)
            .ok_or_else(|| OAuthError::internal(&"no signing key is active"))
    }

    /// `grant_type=client_credentials`.
    pub async fn client_credentials(
        &self,
        a: &Authenticated,
        p: &Params,
        peer: &Peer,
    ) -> Result<Value, OAuthError> {
        let c = &a.client;
        if !c.grant_types.iter().any(|g| g == GRANT_CLIENT_CREDENTIALS) {
            return Err(err(Refusal::GrantNotAllowed));
        }
        let scopes = match requested_scopes(p)? {
            Some(s) if !subset(&s, &c.scopes) => return Err(err(Refusal::ScopeNotAllowed)),
            Some(s) => s,
            None => c.scopes.clone(),
        };
        let audiences = match requested_audiences(p) {
            Some(a) if !subset(&a, &c.audiences) => return Err(err(Refusal::AudienceNotAllowed)),
            Some(a) => a,
            None if c.audiences.is_empty() => return Err(err(Refusal::NoAudience)),
            None => c.audiences.clone(),
        };
        let now = self.now();
        let g = Grant {
            subject: c.client_id.clone(),
            client_id: c.client_id.clone(),
            audiences,
            scopes,
            lifetime: self.lifetime_for(a),
            cert_thumbprint: a.cert_thumbprint.clone(),
            act: None,
        };
        let m = self.mint(&g, now)?;
        // Fail closed: a token whose issuance is not on record is not handed out (with
        // `authority.audit.issuance = "every"`; see crate::audit for the other levels).
        self.audit
            .record_issue(
                &c.client_id,
                now,
                Event::new("token.issue", &c.client_id, "success")
                    .subject(&m.jti)
                    .detail(json!({
                        "grant_type": GRANT_CLIENT_CREDENTIALS,
                        "client_id": c.client_id,
                        "auth_method": a.method.as_str(),
                        "aud": g.audiences,
                        "scope": g.scopes.join(" "),
                        "exp": m.exp,
                        "kid": m.kid,
                        "cert_bound": g.cert_thumbprint.is_some(),
                    }))
                    .source(Some(peer.ip.to_string())),
            )
            .await?;
        self.security_event(
            "token.issued",
            "client_credentials",
            peer,
            &c.client_id,
            json!({ "jti": m.jti, "aud": g.audiences, "scope": g.scopes.join(" ") }),
        );
        Ok(response(&m, &g, false))
    }

    /// One security event about `client_id`'s request (a client id is not a secret; a token
    /// id neither; the token itself never appears).
    fn security_event(
        &self,
        event: &'static str,
        reason: &'static str,
        peer: &Peer,
        client_id: &str,
        detail: Value,
    ) {
        self.events.emit(&SecurityEvent {
            event,
            reason,
            client: Some(peer.ip),
            subject: Some(client_id),
            detail: Some(detail),
            ..Default::default()
        });
    }

    /// Verifies a token presented to the authority (ours, valid now, not revoked).
    pub async fn verify_own(&self, token: &str) -> Result<Option<Map<String, Value>>, OAuthError> {
        let now = self.now();
        let Some(c) = tokens::verify(&self.keys.ring(), &self.settings.issuer, token, now) else {
            return Ok(None);
        };
        let jti = c.get("jti").and_then(Value::as_str).unwrap_or_default();
        let exp = c.get("exp").and_then(Value::as_i64).unwrap_or_default();
        if self.revocations.is_revoked(jti, exp, now).await? {
            return Ok(None);
        }
        Ok(Some(c))
    }

    /// `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`.
    pub async fn token_exchange(
        &self,
        a: &Authenticated,
        p: &Params,
        peer: &Peer,
    ) -> Result<Value, OAuthError> {
        let c = &a.client;
        if !c.grant_types.iter().any(|g| g == GRANT_TOKEN_EXCHANGE) {
            return Err(err(Refusal::GrantNotAllowed));
        }
        if p.get("requested_token_type")
            .is_some_and(|t| t != TOKEN_TYPE_ACCESS && t != TOKEN_TYPE_JWT)
        {
            return Err(err(Refusal::BadRequestedTokenType));
        }
        let (Some(subject_token), Some(subject_type)) =
            (p.get("subject_token"), p.get("subject_token_type"))
        else {
            return Err(err(Refusal::MissingSubjectToken));
        };
        if subject_type != TOKEN_TYPE_ACCESS && subject_type != TOKEN_TYPE_JWT {
            return Err(err(Refusal::BadSubjectTokenType));
        }
        let Some(subject) = self.verify_own(subject_token).await? else {
            return Err(err(Refusal::InvalidSubjectToken));
        };
        // The actor: the exchanging client, or the subject of an actor token issued to it.
        let actor = match (p.get("actor_token"), p.get("actor_token_type")) {
            (None, None) => c.client_id.clone(),
            (Some(t), Some(ty)) if ty == TOKEN_TYPE_ACCESS || ty == TOKEN_TYPE_JWT => {
                let Some(act) = self.verify_own(t).await? else {
                    return Err(err(Refusal::InvalidActorToken));
                };
                if act.get("client_id").and_then(Value::as_str) != Some(&c.client_id) {
                    return Err(err(Refusal::InvalidActorToken));
                }
                act.get("sub")
                    .and_then(Value::as_str)
                    .unwrap_or(&c.client_id)
                    .to_owned()
            }
            _ => return Err(err(Refusal::BadActorTokenParameters)),
        };
        let subject_scopes = scopes_of(&subject);
        let scopes = match requested_scopes(p)? {
            Some(s) if !subset(&s, &subject_scopes) => {
                return Err(err(Refusal::ExchangeScopeNotAllowed))
            }
            Some(s) => s,
            None => subject_scopes,
        };
        let audiences = match requested_audiences(p) {
            Some(a) if !subset(&a, &c.exchange_audiences) => {
                return Err(err(Refusal::ExchangeAudienceNotAllowed))
            }
            Some(a) => a,
            None => {
                let both: Vec<String> = audiences_of(&subject)
                    .into_iter()
                    .filter(|a| c.exchange_audiences.contains(a))
                    .collect();
                if both.is_empty() {
                    return Err(err(Refusal::NoExchangeAudience));
                }
                both
            }
        };
        let now = self.now();
        let subject_exp = subject.get("exp").and_then(Value::as_i64).unwrap_or(now);
        let lifetime = self.lifetime_for(a).min(subject_exp - now);
        if lifetime < 1 {
            return Err(err(Refusal::SubjectTokenExpiring));
        }
        let mut act = json!({ "sub": actor });
        if let Some(prior) = subject.get("act") {
            act["act"] = prior.clone();
        }
        let sub = subject
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(|| err(Refusal::InvalidSubjectToken))?;
        let g = Grant {
            subject: sub.to_owned(),
            client_id: c.client_id.clone(),
            audiences,
            scopes,
            lifetime,
            cert_thumbprint: a.cert_thumbprint.clone(),
            act: Some(act),
        };
        let m = self.mint(&g, now)?;
        self.audit
            .record(
                Event::new("token.exchange", &c.client_id, "success")
                    .subject(&m.jti)
                    .detail(json!({
                        "grant_type": GRANT_TOKEN_EXCHANGE,
                        "client_id": c.client_id,
                        "sub": g.subject,
                        "subject_jti": subject.get("jti"),
                        "aud": g.audiences,
                        "scope": g.scopes.join(" "),
                        "act": g.act,
                        "exp": m.exp,
                        "kid": m.kid,
                    }))
                    .source(Some(peer.ip.to_string())),
            )
            .await?;
        self.security_event(
            "token.exchanged",
            "delegation",
            peer,
            &c.client_id,
            json!({
                "jti": m.jti,
                "sub": g.subject,
                "subject_jti": subject.get("jti"),
                "aud": g.audiences,
                "scope": g.scopes.join(" "),
            }),
        );
        Ok(response(&m, &g, true))
    }

    /// `POST /oauth2/introspect` for an authenticated client: the answer of
    /// [`Authority::introspect`] when the client is granted introspection
    /// ([`crate::clients::Client::introspect`]), `{"active": false}` otherwise (RFC 7662 §2.2
    /// lets a server answer so when the caller may not see the token). The refusal is audited
    /// (`token.introspect`, `failure`, reason `not_permitted`) so that a misconfigured
    /// resource server is easy to find; the token is not even parsed for it.
    pub async fn introspect_for(
        &self,
        a: &Authenticated,
        token: &str,
        peer: &Peer,
    ) -> Result<Bytes, OAuthError> {
        if !a.client.introspect {
            self.audit
                .record_lossy(
                    Event::new("token.introspect", &a.client.client_id, "failure")
                        .detail(json!({ "reason": "not_permitted" }))
                        .source(Some(peer.ip.to_string())),
                )
                .await;
            self.security_event(
                "introspection.refused",
                "not_permitted",
                peer,
                &a.client.client_id,
                json!({}),
            );
            return Ok(Bytes::from_static(INACTIVE));
        }
        self.introspect(token).await
    }

    /// RFC 7662 introspection of `token`: the JSON answer (whoever asks; see
    /// [`Authority::introspect_for`] for the permission check).
    ///
    /// A token seen before is answered from the introspection cache ([`crate::token_cache`]):
    /// its expiry, `nbf` and signing key are checked again at every hit, the signature is not.
    /// Revocation is checked on every request, cached or not (through the revocation list's
    /// short-lived memory, see [`crate::revocation`]).
    pub async fn introspect(&self, token: &str) -> Result<Bytes, OAuthError> {
        let now = self.now();
        let ring = self.keys.ring();
        let key = TokenCache::key(token);
        if let Some(hit) = self.introspected.get(&key, &ring, now) {
            if self.revocations.is_revoked(&hit.jti, hit.exp, now).await? {
                return Ok(Bytes::from_static(INACTIVE));
            }
            return Ok(hit.answer.clone());
        }
        let Some((c, kid)) = tokens::verify_with_kid(&ring, &self.settings.issuer, token, now)
        else {
            return Ok(Bytes::from_static(INACTIVE));
        };
        let jti = c.get("jti").and_then(Value::as_str).unwrap_or_default();
        let exp = c.get("exp").and_then(Value::as_i64).unwrap_or_default();
        if self.revocations.is_revoked(jti, exp, now).await? {
            return Ok(Bytes::from_static(INACTIVE));
        }
        let mut out = json!({ "active": true, "token_type": "Bearer" });
        for k in [
            "scope",
            "client_id",
            "sub",
            "aud",
            "iss",
            "exp",
            "iat",
            "nbf",
            "jti",
            "cnf",
            "act",
        ] {
            if let Some(v) = c.get(k) {
                out[k] = v.clone();
            }
        }
        let answer = Bytes::from(serde_json::to_vec(&out).map_err(|e| OAuthError::internal(&e))?);
        self.introspected.insert(
            key,
            Introspected {
                jti: jti.into(),
                exp,
                nbf: c.get("nbf").and_then(Value::as_i64),
                kid: kid.into(),
                answer: answer.clone(),
            },
            now,
        );
        Ok(answer)
    }

    /// RFC 7009 revocation by an authenticated client. Tokens that are not ours, malformed or
    /// expired are a no-op (200); a token issued to another client is `unauthorized_client`.
    pub async fn revoke(
        &self,
        a: &Authenticated,
        token: &str,
        peer: &Peer,
    ) -> Result<(), OAuthError> {
        let Some(c) = tokens::verify(&self.keys.ring(), &self.settings.issuer, token, self.now())
        else {
            return Ok(());
        };
        if c.get("client_id").and_then(Value::as_str) != Some(&a.client.client_id) {
            self.audit
                .record_lossy(
                    Event::new("token.revoke", &a.client.client_id, "failure")
                        .subject(c.get("jti").and_then(Value::as_str).unwrap_or("-"))
                        .detail(json!({ "reason": "not_issued_to_client" }))
                        .source(Some(peer.ip.to_string())),
                )
                .await;
            self.security_event(
                "revocation.refused",
                "not_issued_to_client",
                peer,
                &a.client.client_id,
                json!({ "jti": c.get("jti") }),
            );
            return Err(err(Refusal::RevokeNotOwner));
        }
        let jti = c.get("jti").and_then(Value::as_str).unwrap_or_default();
        let exp = c.get("exp").and_then(Value::as_i64).unwrap_or_default();
        let r = self.revocations.revoke(jti, exp, self.now()).await?;
        let _ = self.revoked_tx.send(r.clone());
        self.audit
            .record(
                Event::new("token.revoke", &a.client.client_id, "success")
                    .subject(jti)
                    .detail(json!({ "exp": exp, "seq": r.seq }))
                    .source(Some(peer.ip.to_string())),
            )
            .await?;
        self.security_event(
            "token.revoked",
            "revoked",
            peer,
            &a.client.client_id,
            json!({ "jti": jti, "seq": r.seq }),
        );
        Ok(())
    }
}
