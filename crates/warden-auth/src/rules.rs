//! A route's compiled auth rules: which credentials it accepts and what the caller must have.

use http::Method;
use serde_json::Value;
use warden_config::{AuthRules, UpstreamToken};

use crate::identity::Identity;

/// A credential a route accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accept {
    /// A JWT from any issuer (`None`) or the named one.
    Jwt(Option<String>),
    /// An API key.
    ApiKey,
    /// An opaque token checked at the named introspection endpoint.
    Introspection(String),
    /// A client certificate.
    ClientCert,
}

/// `*` glob matching (any run of characters, including none); everything else literal.
pub fn glob(pattern: &str, s: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[derive(Clone, Debug)]
enum ClaimCond {
    Equals(String),
    OneOf(Vec<String>),
    Glob(String),
}

/// Why a caller was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denied {
    /// The reason label (metrics, log).
    pub reason: &'static str,
    /// Missing scopes (RFC 6750 `insufficient_scope`).
    pub insufficient_scope: bool,
}

/// A route's rules, compiled.
#[derive(Clone, Debug)]
pub struct RoutePolicy {
    /// Credentials accepted, in order.
    pub accept: Vec<Accept>,
    scopes_all: Vec<String>,
    scopes_any: Vec<String>,
    claims: Vec<(String, ClaimCond)>,
    subjects: Vec<String>,
    methods: Vec<Method>,
    /// Whether Cedar policies must also permit.
    pub policy: bool,
    /// What the upstream gets in `Authorization`.
    pub upstream_token: UpstreamToken,
}

impl RoutePolicy {
    /// Compiles validated rules.
    pub fn compile(r: &AuthRules) -> RoutePolicy {
        let accept = r
            .accept
            .iter()
            .filter_map(|a| match a.split_once(':') {
                None => match a.as_str() {
                    "jwt" => Some(Accept::Jwt(None)),
                    "api_key" => Some(Accept::ApiKey),
                    "client_cert" => Some(Accept::ClientCert),
                    _ => None,
                },
                Some(("jwt", n)) => Some(Accept::Jwt(Some(n.to_owned()))),
                Some(("introspection", n)) => Some(Accept::Introspection(n.to_owned())),
                Some(_) => None,
            })
            .collect();
        let claims = r
            .claims
            .iter()
            .map(|c| {
                let cond = if let Some(e) = &c.equals {
                    ClaimCond::Equals(e.clone())
                } else if let Some(g) = &c.glob {
                    ClaimCond::Glob(g.clone())
                } else {
                    ClaimCond::OneOf(c.one_of.clone())
                };
                (c.claim.clone(), cond)
            })
            .collect();
        RoutePolicy {
            accept,
            scopes_all: r.scopes_all.clone(),
            scopes_any: r.scopes_any.clone(),
            claims,
            subjects: r.subjects.clone(),
            methods: r
                .allow_methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            policy: r.policy,
            upstream_token: r.upstream_token,
        }
    }

    /// Applies the rules (not the Cedar policies) to an authenticated caller.
    pub fn check(&self, id: &Identity, method: &Method) -> Result<(), Denied> {
        let deny = |reason| Denied {
            reason,
            insufficient_scope: false,
        };
        if !self.methods.is_empty() && !self.methods.contains(method) {
            return Err(deny("method_not_allowed"));
        }
        if !self.subjects.is_empty() && !self.subjects.iter().any(|p| glob(p, &id.subject)) {
            return Err(deny("subject_not_allowed"));
        }
        if !self.scopes_all.iter().all(|s| id.has_scope(s))
            || (!self.scopes_any.is_empty() && !self.scopes_any.iter().any(|s| id.has_scope(s)))
        {
            return Err(Denied {
                reason: "insufficient_scope",
                insufficient_scope: true,
            });
        }
        for (name, cond) in &self.claims {
            let ok = id.claim(name).is_some_and(|v| claim_holds(v, cond));
            if !ok {
                return Err(deny("claim_mismatch"));
            }
        }
        Ok(())
    }

    /// Scopes the route requires, for the `scope` parameter of an `insufficient_scope` answer.
    pub fn required_scopes(&self) -> String {
        let mut v = self.scopes_all.clone();
        v.extend(self.scopes_any.iter().cloned());
        v.join(" ")
    }
}

fn claim_holds(v: &Value, cond: &ClaimCond) -> bool {
    let one = |s: &str| match cond {
        ClaimCond::Equals(e) => s == e,
        ClaimCond::OneOf(set) => set.iter().any(|x| x == s),
        ClaimCond::Glob(g) => glob(g, s),
    };
    match v {
        Value::String(s) => one(s),
        Value::Bool(b) => one(if *b { "true" } else { "false" }),
        Value::Number(n) => one(&n.to_string()),
        Value::Array(a) => a.iter().any(|x| match x {
            Value::String(s) => one(s),
            Value::Number(n) => one(&n.to_string()),
            _ => false,
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::AuthMethod;

    #[test]
    fn glob_matches_stars_and_literals() {
        assert!(glob(
            "spiffe://prod/ns/*/sa/api",
            "spiffe://prod/ns/billing/sa/api"
        ));
        assert!(!glob(
            "spiffe://prod/ns/*/sa/api",
            "spiffe://prod/ns/billing/sa/web"
        ));
        assert!(glob("*@example.com", "a@example.com"));
        assert!(!glob("*@example.com", "a@example.com.evil"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }

    fn rules(toml_text: &str) -> RoutePolicy {
        let r: AuthRules = toml::from_str(toml_text).unwrap();
        RoutePolicy::compile(&r)
    }

    fn caller() -> Identity {
        let mut id = Identity::new("alice", AuthMethod::Jwt);
        id.scopes = vec!["read".into(), "write".into()];
        id.claims = serde_json::json!({"tenant": "acme", "groups": ["a", "b"], "org": {"id": 7}})
            .as_object()
            .unwrap()
            .clone();
        id
    }

    #[test]
    fn scopes_all_and_any() {
        let r = rules("accept=['jwt']\nscopes_all=['read','write']");
        assert!(r.check(&caller(), &Method::GET).is_ok());
        let r = rules("accept=['jwt']\nscopes_all=['read','admin']");
        let d = r.check(&caller(), &Method::GET).unwrap_err();
        assert!(d.insufficient_scope);
        let r = rules("accept=['jwt']\nscopes_any=['admin','write']");
        assert!(r.check(&caller(), &Method::GET).is_ok());
        let r = rules("accept=['jwt']\nscopes_any=['admin']");
        assert!(r.check(&caller(), &Method::GET).is_err());
    }

    #[test]
    fn claim_conditions() {
        let ok = [
            "claims=[{claim='tenant', equals='acme'}]",
            "claims=[{claim='tenant', one_of=['x','acme']}]",
            "claims=[{claim='tenant', glob='ac*'}]",
            "claims=[{claim='groups', equals='b'}]",
            "claims=[{claim='org.id', equals='7'}]",
        ];
        for c in ok {
            assert!(
                rules(&format!("accept=['jwt']\n{c}"))
                    .check(&caller(), &Method::GET)
                    .is_ok(),
                "{c}"
            );
        }
        let bad = [
            "claims=[{claim='tenant', equals='other'}]",
            "claims=[{claim='missing', equals='x'}]",
            "claims=[{claim='groups', one_of=['c']}]",
            "claims=[{claim='org', equals='7'}]",
        ];
        for c in bad {
            let d = rules(&format!("accept=['jwt']\n{c}"))
                .check(&caller(), &Method::GET)
                .unwrap_err();
            assert_eq!(d.reason, "claim_mismatch", "{c}");
        }
    }

    #[test]
    fn subjects_and_methods() {
        let r = rules("accept=['jwt']\nsubjects=['ali*']\nallow_methods=['GET']");
        assert!(r.check(&caller(), &Method::GET).is_ok());
        assert_eq!(
            r.check(&caller(), &Method::POST).unwrap_err().reason,
            "method_not_allowed"
        );
        let r = rules("accept=['jwt']\nsubjects=['bob']");
        assert_eq!(
            r.check(&caller(), &Method::GET).unwrap_err().reason,
            "subject_not_allowed"
        );
    }
}
