//! Config builders and readers for authentication tests: `[[auth.jwt]]` issuers, clusters and
//! routes with `[routes.auth]` rules as TOML fragments; `/metrics` series and access-log lines.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{client, Upstream};

/// A path as a TOML string (quoted and escaped).
pub fn q(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// A TOML array of strings: `["a", "b"]`.
pub fn list(items: &[&str]) -> String {
    let v: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", v.join(", "))
}

/// Where an issuer's keys come from.
#[derive(Clone, Copy, Debug)]
pub enum Keys<'a> {
    /// A JWK set file.
    JwksFile(&'a Path),
    /// A PEM public key file.
    PublicKeyFile(&'a Path),
}

/// A `[[auth.jwt]]` entry with audience `api`; `extra` is appended inside the table (e.g.
/// `leeway = "0s"`).
pub fn issuer(name: &str, iss: &str, algorithms: &[&str], keys: Keys<'_>, extra: &str) -> String {
    let source = match keys {
        Keys::JwksFile(p) => format!("jwks_file = {}", q(p)),
        Keys::PublicKeyFile(p) => format!("public_key_file = {}", q(p)),
    };
    format!(
        "[[auth.jwt]]\nname = {name:?}\nissuer = {iss:?}\naudiences = [\"api\"]\nalgorithms = {}\n\
         {source}\n{extra}\n",
        list(algorithms)
    )
}

/// A cluster with the upstream as its one endpoint.
pub fn cluster(name: &str, up: &Upstream) -> String {
    format!(
        "[[clusters]]\nname = {name:?}\nendpoints = [\"{}\"]\n",
        up.url()
    )
}

/// A route for `prefix` to `cluster`. `rules` is the body of its `[routes.auth]` table (e.g.
/// `accept = ["jwt"]`); `None` makes it public (`auth = "none"`).
pub fn route(name: &str, prefix: &str, cluster: &str, rules: Option<&str>) -> String {
    let head =
        format!("[[routes]]\nname = {name:?}\ncluster = {cluster:?}\npath_prefix = {prefix:?}\n");
    match rules {
        None => format!("{head}auth = \"none\"\n"),
        Some(r) => format!("{head}[routes.auth]\n{r}\n"),
    }
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The admin listener's `/metrics` text.
pub async fn metrics(admin: SocketAddr) -> String {
    let res = client::get(admin, "/metrics").await;
    assert_eq!(res.status, 200, "GET /metrics");
    String::from_utf8_lossy(&res.body).into_owned()
}

/// The metrics text once `name` (as [`series`] reads it) has `value` (panics after 5 s):
/// for what is counted when a connection or stream ends, a moment after its client saw it end.
pub async fn metrics_once(admin: SocketAddr, name: &str, value: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics(admin).await;
        if series(&text, name) == Some(value) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {value}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of one series (`name{labels}` exactly as exported), if present.
pub fn series(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `warden_auth_denied_requests_total{route=…,reason=…}`, 0 when absent.
pub fn denied(text: &str, route: &str, reason: &str) -> f64 {
    series(
        text,
        &format!("warden_auth_denied_requests_total{{route=\"{route}\",reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

/// `warden_auth_allowed_requests_total{route=…,reason=…}`, 0 when absent.
pub fn allowed(text: &str, route: &str, method: &str) -> f64 {
    series(
        text,
        &format!("warden_auth_allowed_requests_total{{route=\"{route}\",reason=\"{method}\"}}"),
    )
    .unwrap_or(0.0)
}

/// `base` (from [`crate::base_toml`]) with the access log enabled and written to `log`.
pub fn access_log_toml(base: &str, log: &Path) -> String {
    let toml = base.replace(
        "[access_log]\nenabled = false",
        &format!("[access_log]\nenabled = true\npath = {}", q(log)),
    );
    assert!(toml.contains("enabled = true"), "base_toml changed shape");
    toml
}

/// The text of an access log once it has at least `lines` lines (panics after 5 s).
pub async fn wait_for_lines(log: &Path, lines: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().count() >= lines {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "access log has {} lines, wanted {lines}: {text}",
            text.lines().count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
