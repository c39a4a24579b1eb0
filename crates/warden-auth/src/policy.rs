//! Cedar policies: authorization that a route's simple rules cannot express.
//!
//! A route opts in by naming policy files. They are parsed once, validated strictly against
//! [`SCHEMA`] (an unknown attribute, entity type or action is a load error, not a silent
//! `false` at request time), and evaluated per request by [`Policies::is_authorized`].
//!
//! # Entity model
//!
//! Everything lives in the `Warden` namespace.
//!
//! | Cedar | what it is |
//! | --- | --- |
//! | `principal` | `Warden::Principal::"<subject>"`, the authenticated caller |
//! | `principal.subject` | `String`, the identity's subject |
//! | `principal.auth` | `String`, how it was authenticated: `jwt`, `api_key`, `introspection`, `client_cert` |
//! | `principal.scopes` | `Set<String>`, the scopes granted |
//! | `principal.issuer` | `String`, who vouched for it (empty if none) |
//! | `principal.client_id` | `String`, the OAuth client (empty if none) |
//! | `principal.spiffe_id` | `String`, a client certificate's SPIFFE ID (empty if none) |
//! | tags of `principal` | `String`: the top-level claims. Strings as they are, numbers and booleans as their JSON text, arrays of strings joined with one space; objects, `null` and other arrays are left out |
//! | `action` | `Warden::Action::"<METHOD>"`, one of `GET`, `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE`, `OPTIONS` |
//! | `resource` | `Warden::Route::"<route name>"` |
//! | `resource.name` | `String`, the route's name |
//! | `context.path` | `String`, the normalised request path |
//! | `context.host` | `String`, the request host (lower-case, no port) |
//! | `context.client_ip` | `ipaddr`, the client address (an IPv4-mapped IPv6 address is given as IPv4) |
//! | `context.grpc_service` | `String`, a gRPC call's service (`package.Service`); empty for other requests |
//! | `context.grpc_method` | `String`, a gRPC call's method (`Method`); empty for other requests |
//!
//! A gRPC call is a `POST` whose path is `/package.Service/Method`; its action is
//! `Warden::Action::"POST"`, and policies tell calls apart by `context.grpc_service` and
//! `context.grpc_method`:
//!
//! ```cedar
//! permit (principal, action, resource == Warden::Route::"orders-grpc")
//! when { context.grpc_service == "orders.v1.Orders" && context.grpc_method like "Get*" };
//! ```
//!
//! Claims are entity tags rather than a record because claims differ from token to token: a
//! record needs every attribute declared up front, while tags let a policy ask
//! `principal.hasTag("tenant") && principal.getTag("tenant") == "acme"` for any claim. The
//! validator insists on the `hasTag` guard, so a missing claim cannot be an evaluation error.
//!
//! ```cedar
//! permit (principal, action == Warden::Action::"GET", resource == Warden::Route::"reports")
//! when { principal.scopes.contains("reports:read") }
//! unless { context.client_ip.isInRange(ip("192.0.2.0/24")) };
//! ```
//!
//! # Decisions
//!
//! Cedar's rules: a request is allowed only if some `permit` holds and no `forbid` does. On top
//! of that Warden fails closed: if any policy fails to evaluate, the request is refused even
//! when another policy permits it. A request with a method outside the schema is refused
//! without evaluating anything.
//!
//! # Policy ids
//!
//! A policy is named by its `@id("...")` annotation when it has one, otherwise `policy<N>`,
//! counting every policy of every file in order from 0. Ids must be unique across all files.
//! Decisions name the policies that decided them (`permitted by policy0`).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use cedar_policy::ffi::DetailedError;
use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use serde_json::Value;

use crate::Identity;

/// Warden's Cedar schema (Cedar schema syntax). Policies are validated against it.
pub const SCHEMA: &str = r#"namespace Warden {
  // The authenticated caller. Its tags are the caller's top-level claims.
  entity Principal {
    subject: String,
    auth: String,
    scopes: Set<String>,
    issuer: String,
    client_id: String,
    spiffe_id: String,
  } tags String;

  // The route that matched the request.
  entity Route {
    name: String,
  };

  type RequestContext = {
    path: String,
    host: String,
    client_ip: ipaddr,
    // A gRPC call's service and method; empty for other requests.
    grpc_service: String,
    grpc_method: String,
  };

  // One action per HTTP method.
  action "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" appliesTo {
    principal: Principal,
    resource: Route,
    context: RequestContext,
  };
}
"#;

/// Stack budget for one policy, in the units of [`too_deep`]. Cedar's parser, validator and
/// evaluator all recurse over the expression tree, and the evaluator is the deepest: in a
/// release build on a 2 MiB tokio worker stack it runs out at about 288 nested `if`s or 287
/// chained `||` terms (and its validator silently stops checking past ~550 terms), in a debug
/// build much sooner. The budget keeps well inside that in both: some 40 nested brackets, 60
/// nested `if`s or 600 operator characters (about 120 `principal.x == "y" ||` terms). A policy
/// over it is refused at load with advice (use a set and `contains`), never loaded to fail
/// closed on every request. Found by the `policy_parse` fuzz target (fuzz/regressions/).
const MAX_COST: usize = 600;
/// See [`MAX_COST`].
const BRACKET_COST: usize = 15;
/// See [`MAX_COST`].
const IF_COST: usize = 10;

/// The HTTP methods that are actions in [`SCHEMA`].
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// A validated set of Cedar policies, ready to evaluate. Cheap to share in an `Arc`.
#[derive(Debug)]
pub struct Policies {
    set: PolicySet,
    authorizer: Authorizer,
    principal_type: EntityTypeName,
    route_type: EntityTypeName,
    /// One action uid per entry of [`METHODS`], built once.
    actions: Vec<EntityUid>,
}

/// What a request looks like to the policies.
#[derive(Clone, Copy, Debug)]
pub struct PolicyRequest<'a> {
    /// The authenticated caller.
    pub identity: &'a Identity,
    /// The HTTP method, as sent (`GET`).
    pub method: &'a str,
    /// The name of the route that matched.
    pub route: &'a str,
    /// The normalised request path.
    pub path: &'a str,
    /// The request host.
    pub host: &'a str,
    /// The client address.
    pub client_ip: IpAddr,
    /// A gRPC call's service (`package.Service`) and method (`Method`).
    pub grpc: Option<(&'a str, &'a str)>,
}

/// The outcome of evaluating the policies for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDecision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Why, for logs: `permitted by <ids>`, `forbidden by <ids>`, `no policy permits`,
    /// `policy evaluation error` or `method not in schema`.
    pub reason: String,
}

/// Where a policy came from, to point errors at it.
struct Source<'t> {
    origin: &'t str,
    text: &'t str,
}

impl Policies {
    /// Parses and validates policy text (strict validation against [`SCHEMA`]). `origin` names
    /// the source in errors (a file path). Every error is reported, each as
    /// `<origin>: <reason>` with the line, column and policy id where Cedar gives them.
    pub fn parse(texts: &[(String, String)]) -> Result<Policies, Vec<String>> {
        let mut errors = Vec::new();
        let mut set = PolicySet::new();
        // Policy id -> index into `texts`, to place validation errors.
        let mut from: HashMap<PolicyId, usize> = HashMap::new();
        let mut next = 0usize;
        for (index, (origin, text)) in texts.iter().enumerate() {
            let source = Source { origin, text };
            if let Some(at) = too_deep(text) {
                let at = skip_blank(text, at);
                errors.push(format!(
                    "{origin}: {}policy nests too deeply (brackets, `if` or chained operators); split it, or use a set and `contains`",
                    source.position(Some(at))
                ));
                continue;
            }
            let parsed = match PolicySet::from_str(text) {
                Ok(parsed) => parsed,
                Err(e) => {
                    errors.extend(e.iter().map(|e| source.error(None, e)));
                    continue;
                }
            };
            for template in parsed.templates() {
                errors.push(format!(
                    "{origin}: policy `{}` has a slot (`?principal` or `?resource`); templates are not supported",
                    template.id()
                ));
            }
            // `policies()` promises no order; number them as they appear in the text.
            let mut policies: Vec<_> = parsed.policies().collect();
            policies.sort_by_key(|p| cedar_index(p.id()));
            for policy in policies {
                let id = match policy.annotation("id") {
                    Some(id) => PolicyId::new(id),
                    None => PolicyId::new(format!("policy{next}")),
                };
                next += 1;
                if let Some(&other) = from.get(&id) {
                    let other = texts.get(other).map_or("", |(o, _)| o.as_str());
                    errors.push(format!(
                        "{origin}: policy id `{id}` is also used in {other}"
                    ));
                    continue;
                }
                if let Err(e) = set.add(policy.new_id(id.clone())) {
                    errors.push(format!("{origin}: policy `{id}`: {e}"));
                    continue;
                }
                from.insert(id, index);
            }
        }

        let validator = match Schema::from_cedarschema_str(SCHEMA) {
            Ok((schema, _warnings)) => Validator::new(schema),
            Err(e) => return Err(vec![format!("built-in schema: {e}")]),
        };
        let result = validator.validate(&set, ValidationMode::Strict);
        for e in result.validation_errors() {
            let source = from.get(e.policy_id()).and_then(|&i| texts.get(i));
            let source = source.map_or(
                Source {
                    origin: "<policies>",
                    text: "",
                },
                |(origin, text)| Source { origin, text },
            );
            errors.push(source.error(Some(e.policy_id()), e));
        }
        for w in result.validation_warnings() {
            tracing::warn!(policy = %w.policy_id(), "cedar policy warning: {w}");
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let type_name = |name: &str| {
            EntityTypeName::from_str(name).map_err(|e| vec![format!("built-in type {name}: {e}")])
        };
        let action_type = type_name("Warden::Action")?;
        Ok(Policies {
            set,
            authorizer: Authorizer::new(),
            principal_type: type_name("Warden::Principal")?,
            route_type: type_name("Warden::Route")?,
            actions: METHODS
                .iter()
                .map(|m| EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(m)))
                .collect(),
        })
    }

    /// Reads each file and parses them together; errors name the file.
    pub fn load(files: &[PathBuf]) -> Result<Policies, Vec<String>> {
        let mut errors = Vec::new();
        let mut texts = Vec::with_capacity(files.len());
        for path in files {
            match std::fs::read_to_string(path) {
                Ok(text) => texts.push((path.display().to_string(), text)),
                Err(e) => errors.push(format!("{}: {e}", path.display())),
            }
        }
        match Policies::parse(&texts) {
            Ok(policies) if errors.is_empty() => Ok(policies),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more);
                Err(errors)
            }
        }
    }

    /// Each policy's id (its `@id` annotation, or `policyN` in file order) and effect
    /// (`permit` or `forbid`), sorted by id, for the admin console.
    pub fn summary(&self) -> Vec<(String, &'static str)> {
        let mut out: Vec<_> = self
            .set
            .policies()
            .map(|p| {
                let effect = match p.effect() {
                    cedar_policy::Effect::Permit => "permit",
                    cedar_policy::Effect::Forbid => "forbid",
                };
                (p.id().to_string(), effect)
            })
            .collect();
        out.sort();
        out
    }

    /// Evaluates the policies for one request. Fails closed: an evaluation error refuses.
    pub fn is_authorized(&self, req: &PolicyRequest<'_>) -> PolicyDecision {
        let Some(action) = METHODS
            .iter()
            .position(|m| *m == req.method)
            .and_then(|i| self.actions.get(i))
        else {
            return PolicyDecision::deny("method not in schema");
        };
        let (request, entities) = match self.build(req, action) {
            Ok(built) => built,
            Err(e) => {
                tracing::warn!(route = req.route, "cedar request could not be built: {e}");
                return PolicyDecision::deny("policy evaluation error");
            }
        };
        let response = self
            .authorizer
            .is_authorized(&request, &self.set, &entities);
        let diagnostics = response.diagnostics();
        let mut failed = false;
        for e in diagnostics.errors() {
            tracing::warn!(route = req.route, "cedar policy evaluation error: {e}");
            failed = true;
        }
        if failed {
            return PolicyDecision::deny("policy evaluation error");
        }
        let mut ids: Vec<&str> = diagnostics.reason().map(PolicyId::as_ref).collect();
        ids.sort_unstable();
        let ids = ids.join(", ");
        match response.decision() {
            Decision::Allow => PolicyDecision {
                allowed: true,
                reason: format!("permitted by {ids}"),
            },
            Decision::Deny if ids.is_empty() => PolicyDecision::deny("no policy permits"),
            Decision::Deny => PolicyDecision::deny(format!("forbidden by {ids}")),
        }
    }

    /// The Cedar request and entities for `req`. Built without the schema: their shape is
    /// fixed here and matches it, and checking it again on every request would cost time.
    fn build(
        &self,
        req: &PolicyRequest<'_>,
        action: &EntityUid,
    ) -> Result<(Request, Entities), String> {
        let id = req.identity;
        let string = |s: &str| RestrictedExpression::new_string(s.to_owned());
        let optional = |s: &Option<String>| string(s.as_deref().unwrap_or(""));
        let principal = EntityUid::from_type_name_and_id(
            self.principal_type.clone(),
            EntityId::new(&id.subject),
        );
        let attrs = [
            ("subject".to_owned(), string(&id.subject)),
            ("auth".to_owned(), string(id.method.as_str())),
            (
                "scopes".to_owned(),
                RestrictedExpression::new_set(id.scopes.iter().map(|s| string(s))),
            ),
            ("issuer".to_owned(), optional(&id.issuer)),
            ("client_id".to_owned(), optional(&id.client_id)),
            ("spiffe_id".to_owned(), optional(&id.spiffe_id)),
        ];
        let tags = id
            .claims
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), RestrictedExpression::new_string(tag(v)?))));
        let principal_entity =
            Entity::new_with_tags(principal.clone(), attrs, [], tags).map_err(|e| e.to_string())?;

        let resource =
            EntityUid::from_type_name_and_id(self.route_type.clone(), EntityId::new(req.route));
        let route_entity = Entity::new(
            resource.clone(),
            HashMap::from([("name".to_owned(), string(req.route))]),
            HashSet::new(),
        )
        .map_err(|e| e.to_string())?;

        let context = Context::from_pairs([
            ("path".to_owned(), string(req.path)),
            ("host".to_owned(), string(req.host)),
            (
                "client_ip".to_owned(),
                RestrictedExpression::new_ip(cedar_ip(req.client_ip)),
            ),
            (
                "grpc_service".to_owned(),
                string(req.grpc.map_or("", |g| g.0)),
            ),
            (
                "grpc_method".to_owned(),
                string(req.grpc.map_or("", |g| g.1)),
            ),
        ])
        .map_err(|e| e.to_string())?;
        let request = Request::new(principal, action.clone(), resource, context, None)
            .map_err(|e| e.to_string())?;
        let entities = Entities::from_entities([principal_entity, route_entity], None)
            .map_err(|e| e.to_string())?;
        Ok((request, entities))
    }
}

impl PolicyDecision {
    fn deny(reason: impl Into<String>) -> Self {
        PolicyDecision {
            allowed: false,
            reason: reason.into(),
        }
    }
}

impl Source<'_> {
    /// `<origin>: [line L, column C: ]<message>[ (help)]`, from a Cedar diagnostic.
    fn error<E>(&self, policy: Option<&PolicyId>, e: &E) -> String
    where
        for<'e> DetailedError: From<&'e E>,
    {
        let detail = DetailedError::from(e);
        let start = detail.source_locations.first().map(|l| l.loc.start);
        let mut out = format!("{}: {}", self.origin, self.position(start));
        // Cedar's validation messages already name the policy; parse errors have none.
        if let Some(id) = policy {
            if !detail.message.contains(&format!("`{id}`")) {
                out.push_str(&format!("policy `{id}`: "));
            }
        }
        out.push_str(&detail.message);
        if let Some(help) = detail.help {
            out.push_str(&format!(" ({help})"));
        }
        out
    }

    /// `line L, column C: ` for a byte offset into the text, or nothing.
    fn position(&self, offset: Option<usize>) -> String {
        let Some(before) = offset.and_then(|o| self.text.get(..o)) else {
            return String::new();
        };
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("line {line}, column {column}: ")
    }
}

/// Where, in `text`, the first statement starts whose syntax tree might be too deep to parse
/// and validate on a 2 MiB thread stack (Cedar's parser recurses per level and has no limit
/// of its own; a stack overflow aborts the process). This is a lexical over-estimate: each
/// bracket costs [`BRACKET_COST`], each `if` [`IF_COST`], every other operator character or
/// keyword 1, and a bracket's cost is its own plus the costliest comma-separated part inside.
fn too_deep(text: &str) -> Option<usize> {
    /// One open bracket (or the statement itself, at the bottom of the stack).
    #[derive(Default)]
    struct Frame {
        /// The costliest comma-separated part so far.
        best: usize,
        /// Operators in the current part.
        ops: usize,
        /// The costliest bracket closed in the current part.
        child: usize,
    }
    impl Frame {
        fn cost(&self) -> usize {
            self.best.max(self.ops.saturating_add(self.child))
        }
    }
    fn close(stack: &mut Vec<Frame>) {
        if stack.len() > 1 {
            if let (Some(inner), Some(outer)) = (stack.pop(), stack.last_mut()) {
                outer.child = outer.child.max(inner.cost().saturating_add(BRACKET_COST));
            }
        }
    }

    let bytes = text.as_bytes();
    let mut stack = vec![Frame::default()];
    let mut start = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let next = bytes.get(i + 1).copied();
        match b {
            b'"' => {
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    match c {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            }
            b'/' if next == Some(b'/') => {
                while bytes.get(i).is_some_and(|&c| c != b'\n') {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                if stack.len() > MAX_COST / BRACKET_COST {
                    return Some(start);
                }
                stack.push(Frame::default());
            }
            b')' | b']' | b'}' => close(&mut stack),
            b';' if stack.len() == 1 => {
                if stack.last().is_some_and(|f| f.cost() > MAX_COST) {
                    return Some(start);
                }
                stack = vec![Frame::default()];
                start = i + 1;
            }
            b'_' | b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => {
                let end = bytes[i..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map_or(bytes.len(), |n| i + n);
                let cost = match &bytes[i..end] {
                    b"if" => IF_COST,
                    b"in" | b"has" | b"like" | b"is" => 1,
                    _ => 0,
                };
                if let Some(top) = stack.last_mut() {
                    top.ops = top.ops.saturating_add(cost);
                }
                i = end;
                continue;
            }
            b',' => {
                if let Some(top) = stack.last_mut() {
                    top.best = top.cost();
                    top.ops = 0;
                    top.child = 0;
                }
            }
            _ if b.is_ascii_whitespace() => {}
            _ => {
                if let Some(top) = stack.last_mut() {
                    top.ops = top.ops.saturating_add(1);
                }
            }
        }
        if stack.last().is_some_and(|f| f.ops > MAX_COST) {
            return Some(start);
        }
        i += 1;
    }
    while stack.len() > 1 {
        close(&mut stack);
    }
    stack
        .last()
        .is_some_and(|f| f.cost() > MAX_COST)
        .then_some(start)
}

/// The offset of the first byte at or after `at` that is not white space or a comment.
fn skip_blank(text: &str, mut at: usize) -> usize {
    let bytes = text.as_bytes();
    loop {
        match bytes.get(at) {
            Some(c) if c.is_ascii_whitespace() => at += 1,
            Some(b'/') if bytes.get(at + 1) == Some(&b'/') => {
                while bytes.get(at).is_some_and(|&c| c != b'\n') {
                    at += 1;
                }
            }
            _ => return at,
        }
    }
}

/// The index Cedar gave a policy parsed from text (`policy7` is 7), for ordering.
fn cedar_index(id: &PolicyId) -> usize {
    let id: &str = id.as_ref();
    id.strip_prefix("policy")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// A claim as an entity tag: strings as they are, numbers and booleans as JSON text, arrays of
/// strings joined with a space; anything else has no tag.
fn tag(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => {
            let strings: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            strings.map(|s| s.join(" "))
        }
        Value::Object(_) | Value::Null => None,
    }
}

/// The address as Cedar's `ip()` accepts it. IPv4-mapped IPv6 becomes IPv4 (a dual-stack
/// listener reports IPv4 clients that way, and policies name IPv4 ranges); other IPv6
/// addresses are written out in full, since Cedar rejects the dotted forms Rust may print.
fn cedar_ip(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!(
                "{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}",
                s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AuthMethod;
    use serde_json::json;

    fn policies(text: &str) -> Policies {
        match Policies::parse(&[("test.cedar".to_owned(), text.to_owned())]) {
            Ok(p) => p,
            Err(e) => panic!("policies should parse: {e:#?}"),
        }
    }

    fn parse_errors(text: &str) -> Vec<String> {
        match Policies::parse(&[("bad.cedar".to_owned(), text.to_owned())]) {
            Ok(_) => panic!("policies should not parse:\n{text}"),
            Err(e) => e,
        }
    }

    fn identity(scopes: &[&str]) -> Identity {
        let mut id = Identity::new("alice", AuthMethod::Jwt);
        id.scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        id
    }

    fn request(identity: &Identity) -> PolicyRequest<'_> {
        PolicyRequest {
            identity,
            method: "GET",
            route: "api",
            path: "/api/things",
            host: "example.com",
            client_ip: IpAddr::from([10, 0, 0, 1]),
            grpc: None,
        }
    }

    fn decide(p: &Policies, identity: &Identity, method: &str, ip: &str) -> PolicyDecision {
        p.is_authorized(&PolicyRequest {
            method,
            client_ip: ip.parse().expect("test ip"),
            ..request(identity)
        })
    }

    #[test]
    fn scope_permit_allows_only_callers_with_the_scope() {
        let p = policies(
            r#"permit (principal, action, resource) when { principal.scopes.contains("admin") };"#,
        );
        let admin = decide(&p, &identity(&["read", "admin"]), "GET", "10.1.2.3");
        assert_eq!(
            admin,
            PolicyDecision {
                allowed: true,
                reason: "permitted by policy0".into()
            }
        );
        let reader = decide(&p, &identity(&["read"]), "GET", "10.1.2.3");
        assert!(!reader.allowed);
        assert_eq!(reader.reason, "no policy permits");
    }

    #[test]
    fn forbid_overrides_permit() {
        let p = policies(
            r#"permit (principal, action, resource);
               forbid (principal, action == Warden::Action::"DELETE", resource == Warden::Route::"api");"#,
        );
        assert!(decide(&p, &identity(&[]), "GET", "10.0.0.1").allowed);
        let delete = decide(&p, &identity(&[]), "DELETE", "10.0.0.1");
        assert_eq!(
            delete,
            PolicyDecision {
                allowed: false,
                reason: "forbidden by policy1".into()
            }
        );
    }

    #[test]
    fn claim_tags_can_be_tested() {
        let p = policies(
            r#"permit (principal, action, resource)
               when { principal.hasTag("tenant") && principal.getTag("tenant") == "acme" };
               permit (principal, action, resource)
               when { principal.hasTag("level") && principal.getTag("level") == "3" &&
                      principal.hasTag("groups") && principal.getTag("groups") == "ops dev" };"#,
        );
        let mut acme = identity(&[]);
        acme.claims.insert("tenant".into(), json!("acme"));
        acme.claims.insert("org".into(), json!({"id": "x"}));
        assert_eq!(
            decide(&p, &acme, "GET", "10.0.0.1").reason,
            "permitted by policy0"
        );

        let mut other = identity(&[]);
        other.claims.insert("tenant".into(), json!("globex"));
        assert_eq!(
            decide(&p, &other, "GET", "10.0.0.1").reason,
            "no policy permits"
        );
        // No claim at all: `hasTag` is false, not an evaluation error.
        assert_eq!(
            decide(&p, &identity(&[]), "GET", "10.0.0.1").reason,
            "no policy permits"
        );

        let mut ops = identity(&[]);
        ops.claims.insert("level".into(), json!(3));
        ops.claims.insert("groups".into(), json!(["ops", "dev"]));
        assert_eq!(
            decide(&p, &ops, "GET", "10.0.0.1").reason,
            "permitted by policy1"
        );
    }

    #[test]
    fn client_ip_range_in_context() {
        let p = policies(
            r#"permit (principal, action, resource)
               when { context.client_ip.isInRange(ip("10.0.0.0/8")) && context.host == "example.com" };"#,
        );
        let id = identity(&[]);
        assert!(decide(&p, &id, "GET", "10.200.0.7").allowed);
        // A dual-stack listener reports IPv4 clients as IPv4-mapped IPv6.
        assert!(decide(&p, &id, "GET", "::ffff:10.200.0.7").allowed);
        let outside = decide(&p, &id, "GET", "192.0.2.1");
        assert_eq!(outside.reason, "no policy permits");
        assert!(!decide(&p, &id, "GET", "2001:db8::1").allowed);
    }

    #[test]
    fn no_matching_policy_denies() {
        let p = policies(r#"permit (principal, action, resource == Warden::Route::"admin");"#);
        let d = decide(&p, &identity(&["admin"]), "GET", "10.0.0.1");
        assert_eq!(
            d,
            PolicyDecision {
                allowed: false,
                reason: "no policy permits".into()
            }
        );
        let empty = policies("");
        assert_eq!(
            decide(&empty, &identity(&[]), "GET", "10.0.0.1").reason,
            "no policy permits"
        );
    }

    #[test]
    fn unknown_attribute_or_entity_type_fails_parse() {
        let errors = parse_errors(
            "permit (principal, action, resource)\n  when { principal.nosuch == \"x\" };",
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("bad.cedar: line 2, column 10: "),
            "{errors:?}"
        );
        assert!(
            errors[0].contains("policy0") && errors[0].contains("nosuch"),
            "{errors:?}"
        );

        let errors =
            parse_errors(r#"permit (principal == Warden::User::"bob", action, resource);"#);
        assert!(errors[0].starts_with("bad.cedar: "), "{errors:?}");
        assert!(errors[0].contains("Warden::User"), "{errors:?}");
    }

    #[test]
    fn syntax_error_fails_parse() {
        let errors =
            parse_errors("permit (principal, action, resource);\npermit (principal action);");
        assert!(
            errors[0].starts_with("bad.cedar: line 2, column "),
            "{errors:?}"
        );
    }

    #[test]
    fn method_outside_schema_is_denied() {
        let p = policies("permit (principal, action, resource);");
        assert!(decide(&p, &identity(&[]), "GET", "10.0.0.1").allowed);
        for method in ["TRACE", "CONNECT", "get", "BREW"] {
            let d = decide(&p, &identity(&[]), method, "10.0.0.1");
            assert_eq!(
                d,
                PolicyDecision {
                    allowed: false,
                    reason: "method not in schema".into()
                }
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let n = 100_000;
        let bodies = [
            format!("{}true{}", "(".repeat(n), ")".repeat(n)),
            format!("[{}true{}].contains(true)", "[".repeat(n), "]".repeat(n)),
            format!(
                "{}true{}",
                "if true then ".repeat(n),
                " else false".repeat(n)
            ),
            format!("1{} == 2", " + 1".repeat(n)),
            "(".repeat(n),
        ];
        for body in bodies {
            let text = format!("permit (principal, action, resource);\npermit (principal, action, resource) when {{ {body} }};");
            let errors = parse_errors(&text);
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].starts_with("bad.cedar: line 2, column 1: policy nests too deeply"),
                "{errors:?}"
            );
        }
        // The deepest policies the limit lets through still parse, validate and evaluate on a
        // 2 MiB stack (a tokio worker's) in this (debug) build.
        let parens = format!("{}true{}", "(".repeat(38), ")".repeat(38));
        let sets = format!(
            "[{}true{}].contains([[true]])",
            "[".repeat(2),
            "]".repeat(2)
        );
        let ifs = format!(
            "{}true{}",
            "if true then ".repeat(58),
            " else false".repeat(58)
        );
        let chain = std::iter::repeat_n(r#"principal.subject == "x""#, 110)
            .chain([r#"principal.subject == "alice""#])
            .collect::<Vec<_>>()
            .join(" || ");
        let mixed = format!(
            "{}{}true{}{}",
            "(".repeat(15),
            "if true then ".repeat(30),
            " else false".repeat(30),
            ")".repeat(15)
        );
        for body in [parens, sets, ifs, chain, mixed] {
            let text = format!("permit (principal, action, resource) when {{ {body} }};");
            assert_eq!(too_deep(&text), None, "{text}");
            let decision = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || {
                    let p = Policies::parse(&[("edge.cedar".into(), text)]).expect("loads");
                    let mut id = identity(&[]);
                    id.subject = "alice".into();
                    p.is_authorized(&request(&id))
                })
                .unwrap()
                .join()
                .expect("no stack overflow");
            assert!(decision.allowed, "{decision:?}");
        }
        // Past the budget: refused at load with advice, not loaded to deny every request.
        let long_chain = vec![r#"principal.subject == "x""#; 300].join(" || ");
        let errors = parse_errors(&format!(
            "permit (principal, action, resource) when {{ {long_chain} }};"
        ));
        assert!(errors[0].contains("use a set and `contains`"), "{errors:?}");
    }

    #[test]
    fn grpc_calls_are_told_apart_by_service_and_method() {
        let p = Policies::parse(&[(
            "grpc.cedar".to_owned(),
            r#"permit (principal, action == Warden::Action::"POST", resource)
               when { context.grpc_service == "orders.v1.Orders" && context.grpc_method like "Get*" };"#
                .to_owned(),
        )])
        .expect("valid against the schema");
        let id = identity(&[]);
        let call = |service, method| {
            p.is_authorized(&PolicyRequest {
                method: "POST",
                path: "/orders.v1.Orders/x",
                grpc: Some((service, method)),
                ..request(&id)
            })
            .allowed
        };
        assert!(call("orders.v1.Orders", "GetOrder"));
        assert!(!call("orders.v1.Orders", "DeleteOrder"));
        assert!(!call("billing.v1.Billing", "GetInvoice"));
        // Not gRPC: both are empty.
        assert!(
            !p.is_authorized(&PolicyRequest {
                method: "POST",
                ..request(&id)
            })
            .allowed
        );
    }

    #[test]
    fn policies_are_send_and_sync() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Policies>();
    }

    #[test]
    fn ids_are_unique_across_files() {
        let texts = [
            ("a.cedar".to_owned(), "permit (principal, action, resource) when { principal.auth == \"jwt\" };".to_owned()),
            ("b.cedar".to_owned(), "@id(\"certs\")\npermit (principal, action, resource) when { principal.auth == \"client_cert\" };\nforbid (principal, action, resource) when { context.path like \"/admin/*\" };".to_owned()),
        ];
        let p = Policies::parse(&texts).expect("two files parse together");
        assert_eq!(
            decide(&p, &identity(&[]), "GET", "10.0.0.1").reason,
            "permitted by policy0"
        );
        let cert = Identity::new("spiffe://example.org/a", AuthMethod::ClientCert);
        assert_eq!(
            decide(&p, &cert, "GET", "10.0.0.1").reason,
            "permitted by certs"
        );
        let admin = p.is_authorized(&PolicyRequest {
            path: "/admin/users",
            ..request(&cert)
        });
        assert_eq!(admin.reason, "forbidden by policy2");
        // What the admin console lists: each id with its effect.
        assert_eq!(
            p.summary(),
            vec![
                ("certs".to_owned(), "permit"),
                ("policy0".to_owned(), "permit"),
                ("policy2".to_owned(), "forbid"),
            ]
        );

        let clash = [
            texts[1].clone(),
            (
                "c.cedar".to_owned(),
                "@id(\"certs\") permit (principal, action, resource);".to_owned(),
            ),
        ];
        let errors = Policies::parse(&clash).expect_err("duplicate ids are refused");
        assert_eq!(
            errors,
            ["c.cedar: policy id `certs` is also used in b.cedar"]
        );

        let missing = Policies::load(&[PathBuf::from("/nonexistent/warden.cedar")])
            .expect_err("missing file");
        assert!(
            missing[0].starts_with("/nonexistent/warden.cedar: "),
            "{missing:?}"
        );
    }

    #[test]
    fn evaluation_error_fails_closed() {
        // The second policy overflows at run time, which validation cannot see. Cedar alone
        // would allow (policy0 permits and the failing policy is skipped); Warden refuses.
        let p = policies(
            "permit (principal, action, resource);\n\
             permit (principal, action, resource) when { principal.scopes.contains(\"a\") && 9223372036854775807 + 1 > 0 };",
        );
        let d = decide(&p, &identity(&["a"]), "GET", "10.0.0.1");
        assert_eq!(
            d,
            PolicyDecision {
                allowed: false,
                reason: "policy evaluation error".into()
            }
        );
        assert!(decide(&p, &identity(&[]), "GET", "10.0.0.1").allowed);
    }
}
