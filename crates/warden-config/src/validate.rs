//! Meaning checks over a parsed config: references resolve, names are unique, values are in
//! range, files that must exist do. Every problem is recorded; nothing stops at the first.

use std::collections::HashSet;
use std::path::Path;

use crate::model::*;
use crate::ConfigErrors;

/// A bearer token's reference must read, and the token be long enough not to be guessed.
/// (`vault:` references are refused where they are not supported, by the vault checks.)
pub(crate) fn bearer_token(t: &crate::types::SecretRef, field: String, e: &mut ConfigErrors) {
    if !t.is_local() {
        return;
    }
    match t.read() {
        Err(err) => e.push(field, err.to_string()),
        Ok(v) if v.trim_ascii().len() < 16 => e.push(field, "must be at least 16 bytes"),
        Ok(_) => {}
    }
}

/// Scheme of an upstream endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

/// An upstream endpoint parsed from `http://host:port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Scheme.
    pub scheme: Scheme,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Endpoint {
    /// `host:port` as used in a URI authority (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses an endpoint URL: scheme, host and port, nothing else.
pub fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let (scheme, rest) = if let Some(r) = s.strip_prefix("http://") {
        (Scheme::Http, r)
    } else if let Some(r) = s.strip_prefix("https://") {
        (Scheme::Https, r)
    } else {
        return Err(format!("`{s}` must start with http:// or https://"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "`{s}` must be scheme://host:port with no path, query or user"
        ));
    }
    let default_port = if scheme == Scheme::Https { 443 } else { 80 };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("`{s}`: unclosed `[` in IPv6 address"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("`{s}`: bad port"))?,
            None if after.is_empty() => default_port,
            None => return Err(format!("`{s}`: junk after IPv6 address")),
        };
        (h.to_owned(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse().map_err(|_| format!("`{s}`: bad port `{p}`"))?,
            ),
            None => (rest.to_owned(), default_port),
        }
    };
    if host.is_empty() {
        return Err(format!("`{s}` has no host"));
    }
    Ok(Endpoint { scheme, host, port })
}

pub(crate) fn validate(c: &Config, e: &mut ConfigErrors) {
    server(&c.server, e);
    if let Some(t) = &c.admin.token {
        bearer_token(t, "admin.token".into(), e);
    }
    crate::vault::validate(c, e);
    if c.forwarding.request_id_header.value().is_none() {
        e.push("forwarding.request_id_header", "not a valid header name");
    }
    security_headers(&c.security_headers, "security_headers", e);
    if c.reload.poll_interval.0.is_zero() {
        e.push("reload.poll_interval", "must be more than zero");
    }
    for (i, k) in c.config_signing.trusted_keys.iter().enumerate() {
        let field = format!("config_signing.trusted_keys[{i}].key");
        match std::fs::read(&k.key) {
            Err(err) => e.push(field, format!("cannot read {}: {err}", k.key.display())),
            Ok(pem) => match warden_crypto::jws::VerifyingKey::from_pem(&pem) {
                Ok(
                    warden_crypto::jws::VerifyingKey::Ed25519(_)
                    | warden_crypto::jws::VerifyingKey::P256(_),
                ) => {}
                Ok(_) => e.push(field, "must be an Ed25519 or ECDSA P-256 public key"),
                Err(err) => e.push(field, format!("not a public key: {err}")),
            },
        }
    }
    for (i, kid) in c.config_signing.revoked_keys.iter().enumerate() {
        if kid.len() != 43
            || !kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            e.push(
                format!("config_signing.revoked_keys[{i}]"),
                "must be a key id (43 base64url characters, as `warden config key-id` prints)",
            );
        }
    }
    if c.security_events.path.is_empty() {
        e.push("security_events.path", "must be `stdout` or a file path");
    }
    if c.security_events.max_lines_per_second == 0 {
        e.push("security_events.max_lines_per_second", "must be at least 1");
    }
    validate_tracing(&c.tracing, e);
    if c.access_log.path.is_empty() {
        e.push("access_log.path", "must be `stdout` or a file path");
    }
    if c.listeners.is_empty() {
        e.push("listeners", "at least one listener is needed");
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for (i, l) in c.listeners.iter().enumerate() {
        let p = format!("listeners[{i}]");
        if !names.insert(&l.name) {
            e.push(
                format!("{p}.name"),
                format!("duplicate listener name `{}`", l.name),
            );
        }
        // Port 0 asks the OS for a free port, so two of them never clash.
        if l.address.port() != 0 && !addrs.insert(l.address) {
            e.push(
                format!("{p}.address"),
                format!("{} is used by another listener", l.address),
            );
        }
        if c.admin.enabled && l.address.port() != 0 && l.address == c.admin.address {
            e.push(format!("{p}.address"), "same address as the admin listener");
        }
        if let Some(tls) = &l.tls {
            listener_tls(tls, &format!("{p}.tls"), e);
        }
        match l.role {
            ListenerRole::Gateway => {}
            ListenerRole::Inbound | ListenerRole::Outbound if c.sidecar.is_none() => e.push(
                format!("{p}.role"),
                format!(
                    "`{}` is a sidecar listener: it needs a [sidecar] section",
                    l.role.as_str()
                ),
            ),
            ListenerRole::Inbound if l.tls.is_some() => e.push(
                format!("{p}.tls"),
                "an inbound listener serves the sidecar's SVID: leave tls unset",
            ),
            ListenerRole::Outbound if l.tls.is_some() || !l.address.ip().is_loopback() => e.push(
                format!("{p}.address"),
                "an outbound listener is plain HTTP for the local service: a loopback address, no tls",
            ),
            ListenerRole::Inbound | ListenerRole::Outbound => {}
        }
        let mut served = HashSet::new();
        for (j, name) in l.routes.iter().enumerate() {
            if !served.insert(name) {
                e.push(
                    format!("{p}.routes[{j}]"),
                    format!("route `{name}` is named twice"),
                );
            } else if !c.routes.iter().any(|r| &r.name == name) {
                e.push(
                    format!("{p}.routes[{j}]"),
                    format!("no route is named `{name}`"),
                );
            }
        }
    }
    let mut clusters = HashSet::new();
    for (i, cl) in c.clusters.iter().enumerate() {
        let p = format!("clusters[{i}]");
        if !clusters.insert(cl.name.as_str()) {
            e.push(
                format!("{p}.name"),
                format!("duplicate cluster name `{}`", cl.name),
            );
        }
        cluster(cl, &p, e);
        if !cl.spiffe_ids.is_empty() {
            mesh_cluster(c, cl, &p, e);
        }
    }
    if let Some(sc) = &c.sidecar {
        sidecar(sc, e);
    }
    let mut routes = HashSet::new();
    for (i, r) in c.routes.iter().enumerate() {
        let p = format!("routes[{i}]");
        if !routes.insert(r.name.as_str()) {
            e.push(
                format!("{p}.name"),
                format!("duplicate route name `{}`", r.name),
            );
        }
        if !clusters.contains(r.cluster.as_str()) {
            e.push(
                format!("{p}.cluster"),
                format!("no cluster named `{}`", r.cluster),
            );
        }
        route(r, &p, e);
        if r.websocket.is_some()
            && c.clusters
                .iter()
                .any(|cl| cl.name == r.cluster && cl.protocol == UpstreamProtocol::Http2)
        {
            e.push(
                format!("{p}.websocket"),
                format!(
                    "cluster `{}` speaks HTTP/2; WebSockets go to HTTP/1.1 upstreams only",
                    r.cluster
                ),
            );
        }
        if let Some(crate::auth::RouteAuth::Rules(rules)) = &r.auth {
            crate::validate_auth::route_auth(c, rules, &format!("{p}.auth"), e);
        }
    }
    crate::validate_auth::auth(c, e);
    crate::validate_limits::store(c, e);
    crate::authority::validate(c, e);
    if let Some(tls) = &c.authority.tls {
        listener_tls(tls, "authority.tls", e);
    }
}

fn server(s: &ServerConfig, e: &mut ConfigErrors) {
    let positive = [
        ("server.max_header_bytes", s.max_header_bytes.0 as usize),
        ("server.max_headers", s.max_headers),
        ("server.max_uri_bytes", s.max_uri_bytes.0 as usize),
        ("server.max_connections", s.max_connections),
        ("server.max_in_flight", s.max_in_flight),
    ];
    for (path, v) in positive {
        if v == 0 {
            e.push(path, "must be more than zero");
        }
    }
    if s.max_header_bytes.0 < 1024 {
        e.push("server.max_header_bytes", "must be at least 1024 bytes");
    }
    if s.max_headers > 1000 {
        e.push("server.max_headers", "at most 1000");
    }
    if s.data_threads > 1024 {
        e.push("server.data_threads", "at most 1024 (0: one per CPU)");
    }
    for (path, d) in [
        ("server.header_read_timeout", s.header_read_timeout),
        ("server.idle_timeout", s.idle_timeout),
        ("server.request_timeout", s.request_timeout),
    ] {
        if d.0.is_zero() {
            e.push(path, "must be more than zero");
        }
    }
}

fn security_headers(h: &SecurityHeaders, p: &str, e: &mut ConfigErrors) {
    for (field, v) in [
        ("hsts", &h.hsts),
        ("referrer_policy", &h.referrer_policy),
        ("frame_options", &h.frame_options),
    ] {
        if http::HeaderValue::from_str(v).is_err() {
            e.push(format!("{p}.{field}"), "not a valid header value");
        }
    }
    for (name, v) in &h.extra {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            e.push(format!("{p}.extra.{name}"), "not a valid header name");
        }
        if http::HeaderValue::from_str(v).is_err() {
            e.push(format!("{p}.extra.{name}"), "not a valid header value");
        }
    }
}

fn readable(path: &Path, at: String, e: &mut ConfigErrors) {
    if let Err(err) = std::fs::metadata(path) {
        e.push(at, format!("cannot read `{}`: {err}", path.display()));
    }
}

fn listener_tls(t: &TlsListenerConfig, p: &str, e: &mut ConfigErrors) {
    if t.certificates.is_empty() {
        e.push(
            format!("{p}.certificates"),
            "at least one certificate is needed",
        );
    }
    for (i, c) in t.certificates.iter().enumerate() {
        let cp = format!("{p}.certificates[{i}]");
        readable(&c.cert, format!("{cp}.cert"), e);
        if let Err(err) = c.key.check_local() {
            e.push(format!("{cp}.key"), err.to_string());
        }
        for n in &c.server_names {
            if let Err(why) = host_pattern(n) {
                e.push(format!("{cp}.server_names"), why);
            }
        }
    }
    if let Some(ca) = &t.client_auth {
        readable(&ca.ca, format!("{p}.client_auth.ca"), e);
    }
}

/// Bound of `max_connections_per_endpoint`: far past any useful pool, well inside what a
/// semaphore holds.
const MAX_CONNECTIONS_PER_ENDPOINT: usize = 65_536;

/// A cluster of mesh endpoints (`spiffe_ids`).
fn mesh_cluster(c: &Config, cl: &ClusterConfig, p: &str, e: &mut ConfigErrors) {
    if c.sidecar.is_none() {
        e.push(
            format!("{p}.spiffe_ids"),
            "mesh endpoints use the sidecar's SVID: add a [sidecar] section",
        );
        return;
    }
    if cl.tls.is_some() {
        e.push(
            format!("{p}.tls"),
            "with spiffe_ids the connection uses the sidecar's SVID and bundle: leave tls unset",
        );
    }
    if cl
        .endpoints
        .iter()
        .any(|ep| parse_endpoint(ep).is_ok_and(|ep| ep.scheme != Scheme::Https))
    {
        e.push(
            format!("{p}.endpoints"),
            "mesh endpoints (spiffe_ids) must be https://",
        );
    }
    for (i, id) in cl.spiffe_ids.iter().enumerate() {
        // An ID of another trust domain is a federated peer: the handshake verifies it
        // against that domain's bundle, and refuses it while there is none.
        if let Err(why) = warden_identity::SpiffeId::parse(id) {
            e.push(format!("{p}.spiffe_ids[{i}]"), format!("{id:?} {why}"));
        }
    }
}

fn sidecar(sc: &SidecarConfig, e: &mut ConfigErrors) {
    if let Err(why) = warden_identity::TrustDomain::new(&sc.trust_domain) {
        e.push(
            "sidecar.trust_domain",
            format!("{:?} {why}", sc.trust_domain),
        );
    }
    let https = sc.authority.starts_with("https://");
    if !https && !sc.authority.starts_with("http://") {
        e.push("sidecar.authority", "must be an http:// or https:// URL");
    }
    if https && sc.authority_ca.is_none() {
        e.push(
            "sidecar.authority_ca",
            "required for an https:// authority: the CA that signed its certificate",
        );
    }
    if sc.timeout.0.is_zero() {
        e.push("sidecar.timeout", "must be more than zero");
    }
}

fn cluster(c: &ClusterConfig, p: &str, e: &mut ConfigErrors) {
    if c.endpoints.is_empty() {
        e.push(format!("{p}.endpoints"), "at least one endpoint is needed");
    }
    let mut schemes = HashSet::new();
    for (i, ep) in c.endpoints.iter().enumerate() {
        match parse_endpoint(ep) {
            Ok(ep) => {
                schemes.insert(ep.scheme);
            }
            Err(why) => e.push(format!("{p}.endpoints[{i}]"), why),
        }
    }
    if schemes.len() > 1 {
        e.push(
            format!("{p}.endpoints"),
            "mixes http:// and https://; use one scheme per cluster",
        );
    }
    if schemes.contains(&Scheme::Https) && c.tls.is_none() && c.spiffe_ids.is_empty() {
        e.push(
            format!("{p}.tls"),
            "https:// endpoints need a [tls] section with the CA to trust",
        );
    }
    if c.load_balancer == LoadBalancer::ConsistentHash {
        match &c.hash_header {
            None => e.push(
                format!("{p}.hash_header"),
                "required by load_balancer = \"consistent_hash\"",
            ),
            Some(h) if http::HeaderName::from_bytes(h.as_bytes()).is_err() => {
                e.push(format!("{p}.hash_header"), "not a valid header name")
            }
            Some(_) => {}
        }
    }
    for (field, d) in [
        ("connect_timeout", c.connect_timeout),
        ("response_timeout", c.response_timeout),
    ] {
        if d.0.is_zero() {
            e.push(format!("{p}.{field}"), "must be more than zero");
        }
    }
    if !(1..=MAX_CONNECTIONS_PER_ENDPOINT).contains(&c.max_connections_per_endpoint) {
        e.push(
            format!("{p}.max_connections_per_endpoint"),
            format!("must be between 1 and {MAX_CONNECTIONS_PER_ENDPOINT}"),
        );
    }
    if let Some(t) = &c.tls {
        readable(&t.ca, format!("{p}.tls.ca"), e);
        match (&t.client_cert, &t.client_key) {
            (Some(cert), Some(key)) => {
                readable(cert, format!("{p}.tls.client_cert"), e);
                if let Err(err) = key.check_local() {
                    e.push(format!("{p}.tls.client_key"), err.to_string());
                }
            }
            (None, None) => {}
            _ => e.push(format!("{p}.tls"), "client_cert and client_key go together"),
        }
    }
    if let Some(h) = &c.health_check {
        let hp = format!("{p}.health_check");
        if !h.path.starts_with('/') {
            e.push(format!("{hp}.path"), "must start with /");
        }
        if h.interval.0.is_zero() {
            e.push(format!("{hp}.interval"), "must be more than zero");
        }
        if h.timeout.0.is_zero() {
            e.push(format!("{hp}.timeout"), "must be more than zero");
        }
        if h.healthy_threshold == 0 {
            e.push(format!("{hp}.healthy_threshold"), "must be at least 1");
        }
        if h.unhealthy_threshold == 0 {
            e.push(format!("{hp}.unhealthy_threshold"), "must be at least 1");
        }
        for s in &h.expected_statuses {
            if !(100..=599).contains(s) {
                e.push(
                    format!("{hp}.expected_statuses"),
                    format!("{s} is not an HTTP status"),
                );
            }
        }
        if h.grpc_service.is_some() && c.protocol != UpstreamProtocol::Http2 {
            e.push(
                format!("{hp}.grpc_service"),
                "gRPC health checks need protocol = \"http2\"",
            );
        }
    }
    crate::validate_limits::cluster_protection(c, p, e);
}

fn host_pattern(h: &str) -> Result<(), String> {
    let bare = h.strip_prefix("*.").unwrap_or(h);
    if bare.is_empty()
        || bare.contains('*')
        || !bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == ':')
    {
        return Err(format!(
            "`{h}` is not a host name; use `api.example.com` or `*.example.com`"
        ));
    }
    Ok(())
}

fn route(r: &RouteConfig, p: &str, e: &mut ConfigErrors) {
    if r.auth.is_none() {
        e.push(
            format!("{p}.auth"),
            "every route must say who may call it; write auth = \"none\" for a public route",
        );
    }
    for h in &r.hosts {
        if let Err(why) = host_pattern(h) {
            e.push(format!("{p}.hosts"), why);
        }
    }
    let path_kinds = [
        r.path_exact.is_some(),
        r.path_prefix.is_some(),
        r.path_regex.is_some(),
    ];
    if path_kinds.iter().filter(|b| **b).count() > 1 {
        e.push(
            p.to_string(),
            "use only one of path_exact, path_prefix, path_regex",
        );
    }
    for (field, v) in [
        ("path_exact", &r.path_exact),
        ("path_prefix", &r.path_prefix),
    ] {
        if let Some(v) = v {
            if !v.starts_with('/') {
                e.push(format!("{p}.{field}"), "must start with /");
            }
        }
    }
    if let Some(rw) = &r.rewrite_prefix {
        if r.path_prefix.is_none() {
            e.push(format!("{p}.rewrite_prefix"), "needs path_prefix");
        }
        if !rw.starts_with('/') {
            e.push(format!("{p}.rewrite_prefix"), "must start with /");
        }
    }
    for m in &r.methods {
        if m.value().is_none() || m.as_str().chars().any(|c| c.is_ascii_lowercase()) {
            e.push(
                format!("{p}.methods"),
                format!("`{m}` is not a method (write it in capitals)"),
            );
        } else if (m.as_str() == "TRACE" || m.as_str() == "TRACK") && !r.allow_trace {
            e.push(
                format!("{p}.methods"),
                format!("`{m}` is refused with 405 unless the route sets allow_trace = true"),
            );
        }
    }
    for (i, h) in r.headers.iter().enumerate() {
        let hp = format!("{p}.headers[{i}]");
        if h.name.value().is_none() {
            e.push(format!("{hp}.name"), "not a valid header name");
        }
        if h.exact.is_some() && h.regex.is_some() {
            e.push(hp.clone(), "use exact or regex, not both");
        }
        if !h.present && (h.exact.is_some() || h.regex.is_some()) {
            e.push(hp, "present = false cannot have a value to match");
        }
    }
    if let Some(t) = r.timeout {
        if t.0.is_zero() {
            e.push(format!("{p}.timeout"), "must be more than zero");
        }
    }
    if r.stream_idle_timeout.0.is_zero() {
        e.push(format!("{p}.stream_idle_timeout"), "must be more than zero");
    }
    if let Some(c) = &r.cors {
        let cp = format!("{p}.cors");
        if c.allowed_origins.is_empty() {
            e.push(
                format!("{cp}.allowed_origins"),
                "at least one origin (or \"*\")",
            );
        }
        for o in &c.allowed_origins {
            if o != "*" && !(o.starts_with("https://") || o.starts_with("http://")) {
                e.push(
                    format!("{cp}.allowed_origins"),
                    format!("`{o}` is not an origin like https://app.example.com"),
                );
            }
        }
        if c.allow_credentials && c.allowed_origins.iter().any(|o| o == "*") {
            e.push(
                format!("{cp}.allow_credentials"),
                "not allowed with origin \"*\" (browsers refuse it)",
            );
        }
        for m in &c.allowed_methods {
            if m.value().is_none() {
                e.push(
                    format!("{cp}.allowed_methods"),
                    format!("`{m}` is not a method"),
                );
            }
        }
        for h in c.allowed_headers.iter().chain(&c.exposed_headers) {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                e.push(cp.clone(), format!("`{h}` is not a header name"));
            }
        }
    }
    if let Some(sh) = &r.security_headers {
        security_headers(sh, &format!("{p}.security_headers"), e);
    }
    if let Some(ws) = &r.websocket {
        websocket(ws, &format!("{p}.websocket"), e);
    }
    for (i, l) in r.rate_limits.iter().enumerate() {
        let lp = format!("{p}.rate_limits[{i}]");
        let parts = l.key.parts();
        if parts.is_empty() {
            e.push(format!("{lp}.key"), "needs at least one key");
        } else if parts.len() > 4 {
            e.push(format!("{lp}.key"), "at most 4 keys in a combination");
        }
        for (k, part) in parts.iter().enumerate() {
            if parts[..k].contains(part) {
                e.push(format!("{lp}.key"), format!("`{part}` is listed twice"));
            }
            limit_key(part, r, &format!("{lp}.key"), e);
        }
        if parts.len() > 1 && parts.iter().any(|k| k == "route") {
            e.push(
                format!("{lp}.key"),
                "`route` counts all callers together; it cannot be combined with other keys",
            );
        }
        let authenticated = matches!(r.auth, Some(crate::auth::RouteAuth::Rules(_)));
        match (&l.tier_claim, l.tiers.is_empty()) {
            (Some(c), _) if c.is_empty() || c.split('.').any(str::is_empty) => e.push(
                format!("{lp}.tier_claim"),
                "must be a claim name (a dotted path for nested claims)",
            ),
            (Some(_), true) => e.push(format!("{lp}.tiers"), "tier_claim needs at least one tier"),
            (None, false) => e.push(
                format!("{lp}.tier_claim"),
                "tiers need a tier_claim: the claim or API key attribute that names the tier",
            ),
            (Some(_), false) if !authenticated => e.push(
                format!("{lp}.tier_claim"),
                "tiers need an authenticated route (auth is \"none\")",
            ),
            _ => {}
        }
        for (name, t) in &l.tiers {
            let tp = format!("{lp}.tiers.{name}");
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                e.push(
                    tp.clone(),
                    "a tier name must be 1 to 64 letters, digits, `.`, `_` or `-`",
                );
            }
            if t.requests == 0 {
                e.push(format!("{tp}.requests"), "must be at least 1");
            }
            if t.per.is_some_and(|p| p.0.is_zero()) {
                e.push(format!("{tp}.per"), "must be more than zero");
            }
            if t.burst == Some(0) {
                e.push(format!("{tp}.burst"), "must be at least 1");
            }
        }
        if l.requests == 0 {
            e.push(format!("{lp}.requests"), "must be at least 1");
        }
        if l.per.0.is_zero() {
            e.push(format!("{lp}.per"), "must be more than zero");
        }
        if l.burst == Some(0) {
            e.push(format!("{lp}.burst"), "must be at least 1");
        }
        if l.max_keys == 0 {
            e.push(format!("{lp}.max_keys"), "must be at least 1");
        }
    }
}

/// Checks one part of a rate limit's `key`.
fn limit_key(key: &str, r: &RouteConfig, path: &str, e: &mut ConfigErrors) {
    let identity_key = key == "subject" || key == "api_key" || key.starts_with("claim:");
    if identity_key && !matches!(r.auth, Some(crate::auth::RouteAuth::Rules(_))) {
        e.push(
            path,
            format!("`{key}` needs an authenticated route (auth is \"none\")"),
        );
    }
    match key.strip_prefix("header:") {
        Some(h) if http::HeaderName::from_bytes(h.as_bytes()).is_err() => {
            e.push(path, format!("`{h}` is not a header name"))
        }
        Some(_) => {}
        None if key == "client_ip" || key == "route" || identity_key => {
            if key == "claim:" {
                e.push(path, "`claim:` needs a claim name");
            }
        }
        None => e.push(
            path,
            "must be `client_ip`, `route`, `subject`, `api_key`, `claim:NAME` or `header:NAME`",
        ),
    }
}

/// Close codes an endpoint may send (RFC 6455 §7.4): not 1004-1006 or 1015 (reserved, or
/// never sent on the wire), nor the unassigned ranges.
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn websocket(ws: &WebSocketConfig, p: &str, e: &mut ConfigErrors) {
    if ws.idle_timeout.0.is_zero() {
        e.push(format!("{p}.idle_timeout"), "must be more than zero");
    }
    if ws.max_lifetime.0.is_zero() {
        e.push(format!("{p}.max_lifetime"), "must be more than zero");
    }
    if ws.max_connections == 0 {
        e.push(format!("{p}.max_connections"), "must be at least 1");
    }
    for (name, code) in [
        ("policy_close_code", ws.policy_close_code),
        ("going_away_close_code", ws.going_away_close_code),
    ] {
        if !valid_close_code(code) {
            e.push(
                format!("{p}.{name}"),
                format!("{code} is not a close code an endpoint may send (1000-1003, 1007-1014, 3000-4999)"),
            );
        }
    }
}

/// `[tracing]`: a collector URL the exporter can use, a ratio, bounded queues.
fn validate_tracing(t: &crate::model::TracingConfig, e: &mut ConfigErrors) {
    let https = match t.endpoint.split_once("://") {
        Some(("http", rest)) | Some(("https", rest)) if !rest.is_empty() => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            if authority.contains('@') {
                e.push(
                    "tracing.endpoint",
                    "must not carry credentials (user:password@): they would be logged",
                );
            } else if authority.is_empty() {
                e.push("tracing.endpoint", "must name a host");
            } else if t.protocol == crate::model::OtlpProtocol::Grpc
                && !rest[authority.len()..].trim_matches('/').is_empty()
            {
                e.push(
                    "tracing.endpoint",
                    "a gRPC collector's URL has no path (the service path is fixed)",
                );
            }
            t.endpoint.starts_with("https://")
        }
        _ => {
            e.push(
                "tracing.endpoint",
                "must be an http:// or https:// URL of an OTLP collector",
            );
            false
        }
    };
    if https && t.protocol == crate::model::OtlpProtocol::Grpc && t.ca_file.is_none() {
        e.push(
            "tracing.ca_file",
            "is needed for a gRPC collector over https (its CAs)",
        );
    }
    if t.ca_file.is_some() && !https {
        e.push("tracing.ca_file", "is only used with an https:// endpoint");
    }
    if !(0.0..=1.0).contains(&t.sampling_ratio) || t.sampling_ratio.is_nan() {
        e.push("tracing.sampling_ratio", "must be between 0 and 1");
    }
    if t.service_name.trim().is_empty() {
        e.push("tracing.service_name", "must not be empty");
    }
    if t.timeout.0.is_zero() {
        e.push("tracing.timeout", "must be more than 0");
    }
    if t.scheduled_delay.0.is_zero() {
        e.push("tracing.scheduled_delay", "must be more than 0");
    }
    if !(1..=1_000_000).contains(&t.max_queue_size) {
        e.push("tracing.max_queue_size", "must be between 1 and 1000000");
    }
    if t.max_export_batch_size == 0 || t.max_export_batch_size > t.max_queue_size {
        e.push(
            "tracing.max_export_batch_size",
            "must be at least 1 and at most max_queue_size",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracing_mistakes_name_the_field() {
        let base = "[[listeners]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n";
        let cases = [
            (
                "endpoint = \"127.0.0.1:4318\"",
                "tracing.endpoint: must be an http:// or https:// URL",
            ),
            (
                "endpoint = \"http://user:pw@collector:4318\"",
                "tracing.endpoint: must not carry credentials",
            ),
            (
                "protocol = \"grpc\"\nendpoint = \"http://c:4317/v1/traces\"",
                "tracing.endpoint: a gRPC collector's URL has no path",
            ),
            (
                "protocol = \"grpc\"\nendpoint = \"https://c:4317\"",
                "tracing.ca_file: is needed for a gRPC collector over https",
            ),
            ("protocol = \"zipkin\"", "tracing.protocol"),
            (
                "ca_file = \"/x.pem\"",
                "tracing.ca_file: is only used with an https:// endpoint",
            ),
            (
                "sampling_ratio = 1.5",
                "tracing.sampling_ratio: must be between 0 and 1",
            ),
            (
                "max_queue_size = 0",
                "tracing.max_queue_size: must be between 1 and 1000000",
            ),
            (
                "max_queue_size = 10\nmax_export_batch_size = 11",
                "tracing.max_export_batch_size: must be at least 1 and at most max_queue_size",
            ),
            ("timeout = \"0s\"", "tracing.timeout: must be more than 0"),
            (
                "service_name = \" \"",
                "tracing.service_name: must not be empty",
            ),
        ];
        for (section, needle) in cases {
            let text = format!("{base}[tracing]\nenabled = true\n{section}\n");
            let errors = crate::parse(&text).unwrap_err().to_string();
            assert!(errors.contains(needle), "missing {needle:?} in:\n{errors}");
        }
        let ok = format!("{base}[tracing]\nenabled = true\nendpoint = \"https://otel.example:4318/\"\nsampling_ratio = 0.25\n");
        let c = crate::parse(&ok).unwrap();
        assert_eq!(c.tracing.sampling_ratio, 0.25);
    }

    #[test]
    fn rate_limit_errors_name_the_field() {
        let text = r#"
[[listeners]]
name = "l"
address = "127.0.0.1:0"
[[clusters]]
name = "c"
endpoints = ["http://127.0.0.1:1"]
[[routes]]
name = "r"
auth = "none"
cluster = "c"
[[routes.rate_limits]]
key = "cookie:session"
requests = 0
burst = 0
per = "0s"
"#;
        let errors = crate::parse(text).unwrap_err().to_string();
        for needle in [
            "routes[0].rate_limits[0].key: must be `client_ip`, `route`, `subject`, `api_key`, `claim:NAME` or `header:NAME`",
            "routes[0].rate_limits[0].requests: must be at least 1",
            "routes[0].rate_limits[0].burst: must be at least 1",
            "routes[0].rate_limits[0].per: must be more than zero",
        ] {
            assert!(errors.contains(needle), "missing {needle:?} in:\n{errors}");
        }
    }

    #[test]
    fn admin_token_mistakes_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "too-short\n").unwrap();
        let long = dir.path().join("long");
        std::fs::write(&long, "0123456789abcdef-admin\n").unwrap();
        let listener = "[[listeners]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n";
        let with = |token: &str| format!("[admin]\ntoken = \"{token}\"\n{listener}");
        let errors = crate::parse(&with(&format!("file:{}", short.display())))
            .unwrap_err()
            .to_string();
        assert!(
            errors.contains("admin.token: must be at least 16 bytes"),
            "{errors}"
        );
        let errors = crate::parse(&with("file:/nonexistent/admin-token"))
            .unwrap_err()
            .to_string();
        assert!(errors.contains("admin.token: "), "{errors}");
        let errors = crate::parse(&with("vault:secret/warden#admin"))
            .unwrap_err()
            .to_string();
        assert!(
            errors.contains(
                "admin.token: the [admin] section is read once, at start: use env: or file:"
            ),
            "{errors}"
        );
        let errors = crate::parse(&with("inline-token-0123456789"))
            .unwrap_err()
            .to_string();
        assert!(errors.contains("admin.token"), "{errors}");
        let c = crate::parse(&with(&format!("file:{}", long.display()))).unwrap();
        assert!(c.admin.token.is_some());
        assert!(c
            .input_files()
            .iter()
            .any(|f| f.field == "admin.token" && f.secret));
        // Unset by default, and then a dump has nothing to hide.
        assert!(crate::parse(listener).unwrap().admin.token.is_none());
    }

    #[test]
    fn websocket_mistakes_name_the_field() {
        let text = r#"
[[listeners]]
name = "l"
address = "127.0.0.1:0"
[[clusters]]
name = "c"
endpoints = ["http://127.0.0.1:1"]
protocol = "http2"
[[routes]]
name = "r"
auth = "none"
cluster = "c"
[routes.websocket]
idle_timeout = "0s"
max_lifetime = "0s"
max_connections = 0
policy_close_code = 1006
going_away_close_code = 999
"#;
        let errors = crate::parse(text).unwrap_err().to_string();
        for needle in [
            "routes[0].websocket: cluster `c` speaks HTTP/2; WebSockets go to HTTP/1.1 upstreams only",
            "routes[0].websocket.idle_timeout: must be more than zero",
            "routes[0].websocket.max_lifetime: must be more than zero",
            "routes[0].websocket.max_connections: must be at least 1",
            "routes[0].websocket.policy_close_code: 1006 is not a close code an endpoint may send",
            "routes[0].websocket.going_away_close_code: 999 is not a close code",
        ] {
            assert!(errors.contains(needle), "missing {needle:?} in:\n{errors}");
        }
        // The defaults hold.
        let ok = text
            .replace("protocol = \"http2\"\n", "")
            .split("idle_timeout")
            .next()
            .unwrap()
            .to_owned();
        let c = crate::parse(&ok).unwrap();
        let ws = c.routes[0].websocket.as_ref().unwrap();
        assert_eq!(ws.idle_timeout.0.as_secs(), 300);
        assert_eq!(
            (ws.policy_close_code, ws.going_away_close_code),
            (1008, 1001)
        );
    }

    #[test]
    fn redis_urls_are_checked_by_the_clients_parser() {
        let store = |url: &str| match crate::parse(&format!(
            "[[listeners]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\n\
             [rate_limit_store]\nredis_url = \"{url}\"\n"
        )) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        };
        assert!(store("redis://cache:6380/2").is_empty());
        assert!(store("redis://[::1]").is_empty());
        for (url, why) in [
            ("http://cache", "must be redis://host[:port][/db]"),
            (
                "rediss://cache",
                "TLS to Redis (`rediss://`) is not supported yet; use redis://",
            ),
            (
                "redis://u:pw@cache",
                "must not hold credentials; use rate_limit_store.password",
            ),
            ("redis://cache:port", "`port` is not a port"),
            ("redis://cache/x", "`/x` is not a database number"),
            ("redis://[::1", "unclosed `[` in the host"),
        ] {
            assert_eq!(
                store(url),
                [format!("rate_limit_store.redis_url: {why}")],
                "{url}"
            );
        }
    }

    #[test]
    fn combined_keys_and_tiers_are_checked_with_their_paths() {
        let text = r#"
[[listeners]]
name = "l"
address = "127.0.0.1:0"
[[clusters]]
name = "c"
endpoints = ["http://127.0.0.1:1"]
[[routes]]
name = "r"
auth = "none"
cluster = "c"
[[routes.rate_limits]]
key = ["client_ip", "route", "client_ip", "subject"]
requests = 5
tier_claim = "plan"
[routes.rate_limits.tiers."bad name"]
requests = 0
burst = 0
per = "0s"
[[routes.rate_limits]]
key = []
requests = 5
[routes.rate_limits.tiers.gold]
requests = 10
[[routes.rate_limits]]
key = "client_ip"
requests = 5
tier_claim = "plan"
"#;
        let errors = crate::parse(text).unwrap_err().to_string();
        for needle in [
            "routes[0].rate_limits[0].key: `client_ip` is listed twice",
            "routes[0].rate_limits[0].key: `route` counts all callers together; it cannot be combined with other keys",
            "routes[0].rate_limits[0].key: `subject` needs an authenticated route",
            "routes[0].rate_limits[0].tier_claim: tiers need an authenticated route",
            "routes[0].rate_limits[0].tiers.bad name: a tier name must be 1 to 64 letters, digits",
            "routes[0].rate_limits[0].tiers.bad name.requests: must be at least 1",
            "routes[0].rate_limits[0].tiers.bad name.burst: must be at least 1",
            "routes[0].rate_limits[0].tiers.bad name.per: must be more than zero",
            "routes[0].rate_limits[1].key: needs at least one key",
            "routes[0].rate_limits[1].tier_claim: tiers need a tier_claim",
            "routes[0].rate_limits[2].tiers: tier_claim needs at least one tier",
        ] {
            assert!(errors.contains(needle), "missing {needle:?} in:\n{errors}");
        }
        // A key that is neither a string nor a list says so.
        let errors = crate::parse(&text.replacen("key = []", "key = 5", 1))
            .unwrap_err()
            .to_string();
        assert!(errors.contains("expected a key"), "{errors}");
    }

    #[test]
    fn listeners_name_routes_that_exist_once_and_a_role_warden_knows() {
        let text = r#"
[[listeners]]
name = "edge"
address = "127.0.0.1:0"
routes = ["public", "gone", "public"]
[[listeners]]
name = "local"
address = "127.0.0.1:0"
role = "gateway"
[[clusters]]
name = "c"
endpoints = ["http://127.0.0.1:1"]
[[routes]]
name = "public"
auth = "none"
cluster = "c"
"#;
        let errors = crate::parse(text).unwrap_err().to_string();
        for needle in [
            "listeners[0].routes[1]: no route is named `gone`",
            "listeners[0].routes[2]: route `public` is named twice",
        ] {
            assert!(errors.contains(needle), "missing {needle:?} in:\n{errors}");
        }
        let fixed = text.replace(", \"gone\", \"public\"", "");
        let c = crate::parse(&fixed).expect("valid");
        assert_eq!(c.listeners[0].routes, ["public"]);
        assert!(c.listeners[1].routes.is_empty());
        assert_eq!(c.listeners[1].role.as_str(), "gateway");
        let err = crate::parse(&fixed.replace("role = \"gateway\"", "role = \"sidecar\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `sidecar`"), "{err}");
    }

    #[test]
    fn sidecar_listeners_and_mesh_clusters_name_the_field_and_the_reason() {
        let no_sidecar = r#"
[[listeners]]
name = "in"
address = "127.0.0.1:0"
role = "inbound"
[[clusters]]
name = "peer"
endpoints = ["https://10.0.0.2:15443"]
spiffe_ids = ["spiffe://example.org/billing"]
[[routes]]
name = "r"
auth = "none"
cluster = "peer"
"#;
        let errors = crate::parse(no_sidecar).unwrap_err().to_string();
        for needle in [
            "listeners[0].role: `inbound` is a sidecar listener: it needs a [sidecar] section",
            "clusters[0].spiffe_ids: mesh endpoints use the sidecar's SVID",
        ] {
            assert!(errors.contains(needle), "missing {needle:?} in:\n{errors}");
        }
        let sidecar = r#"
[sidecar]
authority = "https://authority:8200"
authority_ca = "/etc/warden/authority-ca.pem"
trust_domain = "example.org"
join_token = "env:WARDEN_JOIN_TOKEN"
"#;
        let ok = format!("{sidecar}{no_sidecar}");
        let c = crate::parse(&ok).expect("valid with [sidecar]");
        assert_eq!(c.listeners[0].role.as_str(), "inbound");
        let refused = |text: String, needles: &[&str]| {
            let errors = crate::parse(&text).unwrap_err().to_string();
            for needle in needles {
                assert!(errors.contains(needle), "missing {needle:?} in:\n{errors}");
            }
        };
        refused(
            ok.replace("authority_ca = \"/etc/warden/authority-ca.pem\"\n", ""),
            &["sidecar.authority_ca: required for an https:// authority"],
        );
        refused(
            ok.replace("https://authority", "ftp://authority"),
            &["sidecar.authority: must be an http:// or https:// URL"],
        );
        refused(
            ok.replace(
                "trust_domain = \"example.org\"",
                "trust_domain = \"Example.org\"",
            ),
            &["sidecar.trust_domain"],
        );
        refused(
            ok.replace("spiffe://example.org/billing", "spiffe://Other.org/billing")
                .replace("https://10.0.0.2", "http://10.0.0.2"),
            &[
                "clusters[0].spiffe_ids[0]: \"spiffe://Other.org/billing\"",
                "clusters[0].endpoints: mesh endpoints (spiffe_ids) must be https://",
            ],
        );
        // A federated trust domain's workload is a valid peer.
        crate::parse(&ok.replace(
            "spiffe://example.org/billing",
            "spiffe://partner.org/billing",
        ))
        .expect("a peer of a federated trust domain");
        refused(
            ok.replace("role = \"inbound\"", "role = \"outbound\"")
                .replace("127.0.0.1:0", "0.0.0.0:15001"),
            &["listeners[0].address: an outbound listener is plain HTTP for the local service"],
        );
    }

    #[test]
    fn endpoints_parse_hosts_ports_and_ipv6() {
        let e = parse_endpoint("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (Scheme::Http, "127.0.0.1", 8080)
        );
        let e = parse_endpoint("https://[::1]:9443").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.authority()),
            ("::1", 9443, "[::1]:9443".to_string())
        );
        assert_eq!(parse_endpoint("https://svc.local").unwrap().port, 443);
        assert!(parse_endpoint("ftp://x").is_err());
        assert!(parse_endpoint("http://x:1/path").is_err());
        assert!(parse_endpoint("http://x:notaport").is_err());
    }
}
