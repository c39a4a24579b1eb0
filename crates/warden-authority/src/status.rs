//! The authority's status for the gateway's admin console (its Authority page): the seal,
//! the role (with active/standby), the clients, the token signing keys and their ages, and
//! the CA's certificates with their expiry. Names, counts and dates only: no secret, no key
//! material, no client secret hash.

use serde_json::{json, Value};

use crate::services::{Role, Services};

/// The status now. Reading the clients takes the store; a sealed authority reports its seal
/// and nothing else.
pub async fn console_status(services: &Services) -> Value {
    let seal = match services.unsealer().status().await {
        Ok(s) => json!({
            "type": s.kind,
            "initialized": s.initialized,
            "sealed": s.sealed,
            "threshold": s.threshold,
            "shares": s.shares,
            "progress": s.progress,
        }),
        Err(e) => json!({"error": e.to_string(), "sealed": services.is_sealed()}),
    };
    let role = match services.role() {
        Role::Active => "active",
        Role::Standby => "standby",
        Role::Sealed => "sealed",
    };
    let config = services.config();
    let mut v = json!({
        "enabled": true,
        "issuer": config.issuer,
        "listen": config.listen.to_string(),
        "role": role,
        "ha": services.ha_enabled(),
        "seal": seal,
        "now": services.now(),
    });
    let Some(live) = services.live() else {
        return v;
    };
    let authority = &live.authority;
    match authority.registry().list().await {
        Ok(clients) => {
            v["clients"] = clients.len().into();
            v["disabled_clients"] = clients.iter().filter(|c| c.disabled).count().into();
        }
        Err(e) => v["clients_error"] = e.to_string().into(),
    }
    v["signing_keys"] = authority.key_summary().into();
    if let Some(ca) = &live.ca {
        v["ca"] = ca.summary();
    }
    v
}
