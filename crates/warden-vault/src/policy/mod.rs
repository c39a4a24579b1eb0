//! ACL policies in Vault's HCL (or its JSON form), and the ACL a token's policies make.
//!
//! ```hcl
//! path "secret/data/app-a/*" { capabilities = ["create", "read", "update", "list"] }
//! path "secret/+/shared"     { capabilities = ["read"] }
//! path "secret/data/app-a/admin" { capabilities = ["deny"] }
//! ```
//!
//! - A trailing `*` is a prefix glob; a `+` segment matches one path segment.
//! - Deny by default; `deny` in the rule that applies wins over everything.
//! - Rules for the same path in several policies are merged (capabilities unioned).
//! - Of several rules matching a path, one applies: an exact rule if there is one, else the
//!   highest-priority wildcard rule by Vault's documented order. P1 is *lower* priority than
//!   P2 when (1) its first `+` or `*` comes earlier, (2) it ends in `*` and P2 does not,
//!   (3) it has more `+` segments, (4) it is shorter, (5) it sorts lower.
//! - Templated paths (`{{identity.entity.id}}`) are refused with a clear error: there are no
//!   identity entities in Warden's vault yet, and silently matching the literal text would
//!   grant nothing or, worse, the wrong thing. Parameter constraints (`allowed_parameters`,
//!   `denied_parameters`, `required_parameters`) and wrapping TTL bounds are refused for the
//!   same reason: ignoring a restriction would grant more than the author meant.

pub(crate) mod store;

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::Value;

/// A set of capabilities (bit flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps(pub u16);

impl Caps {
    /// `create`.
    pub const CREATE: Caps = Caps(1);
    /// `read`.
    pub const READ: Caps = Caps(2);
    /// `update`.
    pub const UPDATE: Caps = Caps(4);
    /// `patch`.
    pub const PATCH: Caps = Caps(8);
    /// `delete`.
    pub const DELETE: Caps = Caps(16);
    /// `list`.
    pub const LIST: Caps = Caps(32);
    /// `sudo`.
    pub const SUDO: Caps = Caps(64);
    /// `deny`.
    pub const DENY: Caps = Caps(128);
    /// Everything but deny (the root policy).
    pub const ALL: Caps = Caps(127);
    const NAMES: [(&'static str, Caps); 8] = [
        ("create", Caps::CREATE),
        ("read", Caps::READ),
        ("update", Caps::UPDATE),
        ("patch", Caps::PATCH),
        ("delete", Caps::DELETE),
        ("list", Caps::LIST),
        ("sudo", Caps::SUDO),
        ("deny", Caps::DENY),
    ];

    /// Whether every capability of `other` is here (and this is not a deny).
    pub fn allows(self, other: Caps) -> bool {
        self.0 & Caps::DENY.0 == 0 && self.0 & other.0 == other.0
    }

    /// The capability named `name`.
    pub fn from_name(name: &str) -> Option<Caps> {
        Caps::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
    }

    /// Names, as `sys/capabilities-self` reports them (`["deny"]` when nothing is allowed,
    /// `["root"]` for the root policy).
    pub fn names(self) -> Vec<&'static str> {
        if self.0 & Caps::DENY.0 != 0 || self.0 == 0 {
            return vec!["deny"];
        }
        Caps::NAMES
            .iter()
            .filter(|(_, c)| self.0 & c.0 != 0)
            .map(|(n, _)| *n)
            .collect()
    }

    fn union(self, other: Caps) -> Caps {
        Caps(self.0 | other.0)
    }
}

/// One `path` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The path as written (with its `*`).
    pub path: String,
    /// Its capabilities.
    pub caps: Caps,
}

/// A parsed policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Its name.
    pub name: String,
    /// The text it was parsed from (returned by reads).
    pub raw: String,
    /// Its rules, in order.
    pub rules: Vec<Rule>,
}

/// Why a policy text was refused.
#[derive(Debug, thiserror::Error)]
#[error("failed to parse policy: {0}")]
pub struct PolicyError(pub String);

/// Longest policy text accepted, in bytes.
pub(crate) const MAX_POLICY_BYTES: usize = 64 * 1024;

impl Policy {
    /// Parses HCL (or Vault's JSON form).
    pub fn parse(name: &str, raw: &str) -> Result<Policy, PolicyError> {
        if raw.len() > MAX_POLICY_BYTES {
            return Err(PolicyError(format!(
                "the policy is longer than {MAX_POLICY_BYTES} bytes"
            )));
        }
        let rules = if raw.trim_start().starts_with('{') {
            parse_json(raw)?
        } else {
            parse_hcl(raw)?
        };
        for r in &rules {
            check_rule_path(&r.path)?;
        }
        Ok(Policy {
            name: name.to_owned(),
            raw: raw.to_owned(),
            rules,
        })
    }
}

fn parse_hcl(raw: &str) -> Result<Vec<Rule>, PolicyError> {
    let body = hcl::parse(raw).map_err(|e| PolicyError(e.to_string()))?;
    let mut rules = Vec::new();
    for attr in body.attributes() {
        if attr.key() != "name" {
            return Err(PolicyError(format!(
                "unexpected top-level attribute {:?}",
                attr.key()
            )));
        }
    }
    for block in body.blocks() {
        if block.identifier() != "path" {
            return Err(PolicyError(format!(
                "unexpected block {:?} (only `path` blocks are allowed)",
                block.identifier()
            )));
        }
        let [label] = block.labels() else {
            return Err(PolicyError(
                "a `path` block takes exactly one label, the path".into(),
            ));
        };
        let path = label.as_str().to_owned();
        let mut caps = None;
        for attr in block.body().attributes() {
            let list = match (attr.key(), attr.expr()) {
                ("capabilities", hcl::Expression::Array(items)) => items
                    .iter()
                    .map(|e| match e {
                        hcl::Expression::String(s) => Ok(s.clone()),
                        _ => Err(PolicyError(format!(
                            "path {path:?}: capabilities must be strings"
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                ("policy", hcl::Expression::String(s)) => legacy_policy(&path, s)?,
                (key, _) => return Err(unsupported_key(&path, key)),
            };
            caps = Some(caps_from(&path, &list)?);
        }
        if block.body().blocks().next().is_some() {
            return Err(PolicyError(format!(
                "path {path:?}: nested blocks are not supported"
            )));
        }
        let caps =
            caps.ok_or_else(|| PolicyError(format!("path {path:?}: no capabilities given")))?;
        rules.push(Rule { path, caps });
    }
    Ok(rules)
}

fn parse_json(raw: &str) -> Result<Vec<Rule>, PolicyError> {
    let v: Value = serde_json::from_str(raw).map_err(|e| PolicyError(e.to_string()))?;
    let Some(paths) = v.get("path").and_then(Value::as_object) else {
        return Err(PolicyError("a JSON policy needs a `path` object".into()));
    };
    let mut rules = Vec::new();
    for (path, body) in paths {
        let Some(obj) = body.as_object() else {
            return Err(PolicyError(format!("path {path:?}: expected an object")));
        };
        let mut caps = None;
        for (key, val) in obj {
            let list = match (key.as_str(), val) {
                ("capabilities", Value::Array(items)) => items
                    .iter()
                    .map(|i| {
                        i.as_str().map(str::to_owned).ok_or_else(|| {
                            PolicyError(format!("path {path:?}: capabilities must be strings"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                ("policy", Value::String(s)) => legacy_policy(path, s)?,
                (key, _) => return Err(unsupported_key(path, key)),
            };
            caps = Some(caps_from(path, &list)?);
        }
        let caps =
            caps.ok_or_else(|| PolicyError(format!("path {path:?}: no capabilities given")))?;
        rules.push(Rule {
            path: path.clone(),
            caps,
        });
    }
    Ok(rules)
}

fn unsupported_key(path: &str, key: &str) -> PolicyError {
    match key {
        "allowed_parameters"
        | "denied_parameters"
        | "required_parameters"
        | "min_wrapping_ttl"
        | "max_wrapping_ttl"
        | "control_group"
        | "mfa_methods" => PolicyError(format!(
            "path {path:?}: {key:?} is not supported by Warden's vault (refused rather than \
                 ignored, so the policy never grants more than written)"
        )),
        _ => PolicyError(format!("path {path:?}: unknown key {key:?}")),
    }
}

/// The pre-0.9 `policy = "read"` form.
fn legacy_policy(path: &str, s: &str) -> Result<Vec<String>, PolicyError> {
    let caps: &[&str] = match s {
        "deny" => &["deny"],
        "read" => &["read", "list"],
        "write" => &["create", "read", "update", "delete", "list"],
        "sudo" => &["create", "read", "update", "delete", "list", "sudo"],
        other => {
            return Err(PolicyError(format!(
                "path {path:?}: unknown policy {other:?}"
            )))
        }
    };
    Ok(caps.iter().map(|s| (*s).to_owned()).collect())
}

fn caps_from(path: &str, list: &[String]) -> Result<Caps, PolicyError> {
    let mut caps = Caps::default();
    for name in list {
        let c = Caps::from_name(&name.to_ascii_lowercase())
            .ok_or_else(|| PolicyError(format!("path {path:?}: unknown capability {name:?}")))?;
        caps = caps.union(c);
    }
    if caps.0 & Caps::DENY.0 != 0 {
        caps = Caps::DENY;
    }
    Ok(caps)
}

fn check_rule_path(path: &str) -> Result<(), PolicyError> {
    if path.contains("{{") || path.contains("}}") {
        return Err(PolicyError(format!(
            "path {path:?}: templated policy paths ({{{{identity...}}}}) are not supported by \
             Warden's vault"
        )));
    }
    if let Some(i) = path.find('*') {
        if i != path.len() - 1 {
            return Err(PolicyError(format!(
                "path {path:?}: `*` is only allowed at the end of a path"
            )));
        }
    }
    if path.len() > 1024 || path.contains('\0') {
        return Err(PolicyError(format!("path {path:?}: invalid path")));
    }
    Ok(())
}

/// A compiled rule: pattern segments and whether it ends in `*`.
#[derive(Debug)]
struct Pattern {
    raw: String,
    /// The path without its trailing `*`.
    prefix: String,
    glob: bool,
    plus_count: usize,
    /// Byte index of the first `+` or `*` (for priority rule 1).
    first_wild: usize,
    caps: Caps,
}

impl Pattern {
    fn new(raw: &str, caps: Caps) -> Pattern {
        let glob = raw.ends_with('*');
        let prefix = raw.strip_suffix('*').unwrap_or(raw).to_owned();
        let plus_count = prefix.split('/').filter(|s| *s == "+").count();
        let first_plus = prefix
            .split('/')
            .scan(0usize, |off, seg| {
                let at = *off;
                *off += seg.len() + 1;
                Some((at, seg))
            })
            .find(|(_, s)| *s == "+")
            .map(|(at, _)| at);
        let first_glob = glob.then(|| raw.len() - 1);
        let first_wild = match (first_plus, first_glob) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => usize::MAX,
        };
        Pattern {
            raw: raw.to_owned(),
            prefix,
            glob,
            plus_count,
            first_wild,
            caps,
        }
    }

    fn matches(&self, path: &str) -> bool {
        if self.plus_count == 0 {
            return if self.glob {
                path.starts_with(&self.prefix)
            } else {
                path == self.prefix
            };
        }
        let pat: Vec<&str> = self.prefix.split('/').collect();
        let segs: Vec<&str> = path.split('/').collect();
        let last = pat.len() - 1;
        if segs.len() < pat.len() || (!self.glob && segs.len() != pat.len()) {
            return false;
        }
        for (i, p) in pat.iter().enumerate() {
            let s = segs[i];
            let ok = if *p == "+" {
                true
            } else if i == last && self.glob {
                s.starts_with(p)
            } else {
                s == *p
            };
            if !ok {
                return false;
            }
        }
        true
    }

    /// Vault's priority order: `Greater` means `self` wins over `other`.
    fn priority(&self, other: &Pattern) -> Ordering {
        // (1) the later first wildcard wins.
        self.first_wild
            .cmp(&other.first_wild)
            // (2) not ending in `*` wins.
            .then_with(|| other.glob.cmp(&self.glob))
            // (3) fewer `+` wins.
            .then_with(|| other.plus_count.cmp(&self.plus_count))
            // (4) longer wins.
            .then_with(|| self.raw.len().cmp(&other.raw.len()))
            // (5) lexicographically greater wins.
            .then_with(|| self.raw.cmp(&other.raw))
    }
}

/// The merged rules of a token's policies.
#[derive(Debug, Default)]
pub struct Acl {
    root: bool,
    exact: HashMap<String, Caps>,
    wild: Vec<Pattern>,
}

impl Acl {
    /// Merges policies (`root` among the names makes a root ACL).
    pub fn new<'a>(root: bool, policies: impl IntoIterator<Item = &'a Policy>) -> Acl {
        let mut merged: HashMap<String, Caps> = HashMap::new();
        for p in policies {
            for r in &p.rules {
                let e = merged.entry(r.path.clone()).or_default();
                *e = e.union(r.caps);
                if e.0 & Caps::DENY.0 != 0 {
                    *e = Caps::DENY;
                }
            }
        }
        let mut acl = Acl {
            root,
            ..Default::default()
        };
        for (path, caps) in merged {
            if path.ends_with('*') || path.split('/').any(|s| s == "+") {
                acl.wild.push(Pattern::new(&path, caps));
            } else {
                acl.exact.insert(path, caps);
            }
        }
        // Highest priority first, so the first match is the one that applies.
        acl.wild.sort_by(|a, b| b.priority(a));
        acl
    }

    /// Whether this is the root ACL.
    pub fn is_root(&self) -> bool {
        self.root
    }

    /// The capabilities on `path` (the rule that applies; `DENY` if none).
    pub fn capabilities(&self, path: &str) -> Caps {
        if self.root {
            return Caps::ALL;
        }
        if let Some(c) = self.exact.get(path) {
            return *c;
        }
        self.wild
            .iter()
            .find(|p| p.matches(path))
            .map_or(Caps::DENY, |p| p.caps)
    }

    /// Whether `cap` is allowed on `path`.
    pub fn allows(&self, path: &str, cap: Caps) -> bool {
        self.capabilities(path).allows(cap)
    }

    /// Whether any rule could allow something at or below `prefix` (for
    /// `sys/internal/ui/mounts/:path`: Vault answers it for a mount the token can use at all).
    pub fn any_under(&self, prefix: &str) -> bool {
        if self.root {
            return true;
        }
        let allowed = |c: &Caps| c.0 != 0 && c.0 & Caps::DENY.0 == 0;
        self.exact
            .iter()
            .any(|(p, c)| p.starts_with(prefix) && allowed(c))
            || self.wild.iter().any(|p| {
                allowed(&p.caps)
                    && (p.raw.starts_with(prefix)
                        || p.prefix.starts_with(prefix)
                        || (p.glob && prefix.starts_with(&p.prefix))
                        || p.matches(prefix.trim_end_matches('/')))
            })
    }
}

/// The `default` policy every token gets unless created with `no_default_policy`: what a
/// token needs to manage itself (a subset of Vault's own default policy).
pub(crate) const DEFAULT_POLICY: &str = r#"# Allow tokens to look up their own properties
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

# Allow tokens to renew themselves
path "auth/token/renew-self" {
    capabilities = ["update"]
}

# Allow tokens to revoke themselves
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own capabilities on a path
path "sys/capabilities-self" {
    capabilities = ["update"]
}

# Allow a token to look up its resultant ACL from all policies
path "sys/internal/ui/resultant-acl" {
    capabilities = ["read"]
}

# Allow a token to wrap arbitrary values in a response-wrapping token
path "sys/wrapping/wrap" {
    capabilities = ["update"]
}

# Allow a token to look up the creation time and TTL of a given response-wrapping token
path "sys/wrapping/lookup" {
    capabilities = ["update"]
}

# Allow a token to unwrap a response-wrapping token
path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}

# Allow a token to renew a lease via lease_id in the request body; old path for old clients,
# new path for newer
path "sys/renew" {
    capabilities = ["update"]
}
path "sys/leases/renew" {
    capabilities = ["update"]
}

# Allow looking up lease properties. This requires knowing the lease ID ahead of time and
# does not divulge any sensitive information.
path "sys/leases/lookup" {
    capabilities = ["update"]
}
"#;

/// Paths that need `sudo` besides their normal capability (Vault's root-protected paths
/// among those this vault serves).
pub(crate) fn needs_sudo(path: &str) -> bool {
    const EXACT: &[&str] = &[
        "auth/token/revoke-orphan",
        "auth/token/accessors",
        "sys/rotate",
        "sys/seal",
        "sys/step-down",
    ];
    EXACT.contains(&path.trim_end_matches('/'))
        || path.starts_with("sys/audit/")
        || path == "sys/audit"
        || path.starts_with("sys/raw")
        || path.starts_with("sys/leases/lookup/")
        || path.starts_with("sys/leases/revoke-prefix")
        || path.starts_with("sys/leases/revoke-force")
        || path.starts_with("sys/revoke-prefix")
        || path.starts_with("sys/revoke-force")
}

#[cfg(test)]
mod tests;
