//! The HTTP surface shared by every vault endpoint: reading a request the way Vault does and
//! writing Vault's response envelope.
//!
//! - Token: `X-Vault-Token`, else `Authorization: Bearer …`. `X-Vault-Request` is accepted
//!   (and ignored: it only guards browsers against CSRF in Vault).
//! - `X-Vault-Wrap-TTL`: the answer is wrapped (`wrapping.rs`); a malformed or out-of-range
//!   value is 400 before anything runs.
//! - Methods: `PUT` and `POST` are the same write; `LIST` and `GET ?list=true` are the same
//!   list; `PATCH` is a patch; `DELETE` a delete.
//! - Body: a JSON object (empty body = `{}`), at most [`MAX_REQUEST_BYTES`]; anything else is
//!   400 with what was wrong. For reads, query parameters are the input.
//! - Paths: percent-decoded; a `..` or `.` segment or a NUL byte is refused with 400.
//! - Responses: `{request_id, lease_id, renewable, lease_duration, data, wrap_info, warnings,
//!   auth, mount_type}`; a write with nothing to say is `204 No Content`, as in Vault.

use std::collections::HashMap;

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

pub use crate::error::{Result, VaultError};

/// The largest request body accepted, in bytes: 1 MiB. Vault's default `max_request_size`
/// is 32 MiB, but one stored value (a KV version) is at most 1 MiB in `warden-store`, so a
/// larger body could never be stored; refusing it at the edge costs nothing. Larger bodies
/// get 413.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Longest accepted request path below `/v1/`, in bytes (store keys are at most 512 bytes and
/// carry a prefix).
pub const MAX_PATH_BYTES: usize = 384;

/// What a request asks to do, after Vault's method aliases are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// `GET`.
    Read,
    /// `LIST`, or `GET ?list=true`.
    List,
    /// `PUT` or `POST` (create or update: the endpoint decides which capability it needs).
    Write,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
}

/// A request to the vault, parsed once at the edge.
#[derive(Debug)]
pub struct VaultRequest {
    /// The operation.
    pub op: Operation,
    /// The path below `/v1/`, percent-decoded, without leading or trailing `/`.
    pub path: String,
    /// Whether the path ended in `/` (Vault lists "folders" that way).
    pub trailing_slash: bool,
    /// Query parameters (for reads), percent-decoded.
    pub query: HashMap<String, String>,
    /// The token presented, if any.
    pub token: Option<String>,
    /// The JSON body (for writes and patches), `{}` if empty.
    pub body: Map<String, Value>,
    /// The body's `Content-Type`, if any (PATCH needs `application/merge-patch+json`).
    pub content_type: Option<String>,
    /// The client's address, when the server was started with connection info (AppRole's
    /// CIDR bindings need it; without it, CIDR-bound logins are refused).
    pub peer: Option<std::net::IpAddr>,
    /// `X-Vault-Wrap-TTL` in seconds: wrap the response in a single-use token (see
    /// `wrapping.rs`). Between [`MIN_WRAP_TTL`] and [`MAX_WRAP_TTL`].
    pub wrap_ttl: Option<u64>,
    /// This request's id (the envelope's `request_id`, and the audit entries').
    pub id: String,
    /// What the audit devices recorded of the request (its token, and the devices, which
    /// then record its response too).
    pub(crate) audit_seen: std::sync::OnceLock<crate::audit_device::Seen>,
    /// Set once the request's audit event was committed with its write
    /// (`Ctx::transact_audited`), so the router appends no second one.
    pub(crate) audited: std::sync::atomic::AtomicBool,
}

/// Shortest wrapping TTL (`X-Vault-Wrap-TTL`), seconds.
pub const MIN_WRAP_TTL: u64 = 1;
/// Longest wrapping TTL, seconds: the system's maximum token TTL (768 h), as Vault caps it.
pub const MAX_WRAP_TTL: u64 = crate::token::DEFAULT_TTL;

/// Parses `X-Vault-Wrap-TTL` (`"30s"`, `"5m"` or seconds); out of bounds or malformed → 400.
fn wrap_ttl_from(headers: &HeaderMap) -> Result<Option<u64>> {
    let Some(v) = headers.get("x-vault-wrap-ttl") else {
        return Ok(None);
    };
    let bad = || {
        VaultError::BadRequest(format!(
            "invalid X-Vault-Wrap-TTL: expected a duration (like \"30s\", \"5m\" or seconds) \
             between {MIN_WRAP_TTL}s and {MAX_WRAP_TTL}s"
        ))
    };
    let s = v.to_str().map_err(|_| bad())?;
    let secs = parse_duration(s).ok_or_else(bad)?;
    if !(MIN_WRAP_TTL..=MAX_WRAP_TTL).contains(&secs) {
        return Err(bad());
    }
    Ok(Some(secs))
}

impl VaultRequest {
    /// Parses method, path, query, headers and body the way Vault does.
    pub fn parse(
        method: &Method,
        uri_path: &str,
        raw_query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<VaultRequest> {
        let query = parse_query(raw_query.unwrap_or(""));
        let list_flag = query.get("list").is_some_and(|v| v == "true" || v == "1");
        let op = match method.as_str() {
            "GET" | "HEAD" if list_flag => Operation::List,
            "GET" | "HEAD" => Operation::Read,
            "LIST" => Operation::List,
            "PUT" | "POST" => Operation::Write,
            "PATCH" => Operation::Patch,
            "DELETE" => Operation::Delete,
            _ => return Err(VaultError::MethodNotAllowed),
        };
        let (path, trailing_slash) = normalize_path(uri_path)?;
        let token = token_from(headers);
        let wrap_ttl = wrap_ttl_from(headers)?;
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let body = if matches!(op, Operation::Write | Operation::Patch | Operation::Delete) {
            parse_body(body)?
        } else {
            Map::new()
        };
        Ok(VaultRequest {
            op,
            path,
            trailing_slash,
            query,
            token,
            body,
            content_type,
            peer: None,
            wrap_ttl,
            id: request_id(),
            audit_seen: std::sync::OnceLock::new(),
            audited: Default::default(),
        })
    }

    /// The input of the request: the body for writes, the query for reads.
    pub fn input(&self, name: &str) -> Option<Value> {
        match self.body.get(name) {
            Some(v) => Some(v.clone()),
            None => self.query.get(name).map(|s| Value::String(s.clone())),
        }
    }
}

/// The token from `X-Vault-Token`, else from `Authorization: Bearer`.
pub fn token_from(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("x-vault-token").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if !v.is_empty() {
            return Some(v.to_owned());
        }
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = auth.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() {
        Some(rest.trim().to_owned())
    } else {
        None
    }
}

/// Percent-decodes the path below `/v1/` and refuses traversal and NUL.
fn normalize_path(raw: &str) -> Result<(String, bool)> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| VaultError::BadRequest("invalid path: not UTF-8".into()))?;
    if decoded.contains('\0') {
        return Err(VaultError::BadRequest("invalid path: contains NUL".into()));
    }
    let trimmed = decoded.trim_start_matches('/');
    let trailing = trimmed.ends_with('/');
    let trimmed = trimmed.trim_end_matches('/');
    if trimmed.split('/').any(|s| s == ".." || s == ".") {
        return Err(VaultError::BadRequest(
            "invalid path: `.` and `..` segments are not allowed".into(),
        ));
    }
    if trimmed.contains("//") {
        return Err(VaultError::BadRequest("invalid path: empty segment".into()));
    }
    if trimmed.len() > MAX_PATH_BYTES {
        return Err(VaultError::BadRequest(format!(
            "invalid path: longer than {MAX_PATH_BYTES} bytes"
        )));
    }
    Ok((trimmed.to_owned(), trailing))
}

fn parse_query(raw: &str) -> HashMap<String, String> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(k), decode_component(v))
        })
        .collect()
}

fn decode_component(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// The body as a JSON object; empty is `{}`.
fn parse_body(body: &[u8]) -> Result<Map<String, Value>> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(VaultError::TooLarge);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(VaultError::BadRequest(
            "failed to parse JSON input: the body must be a JSON object".into(),
        )),
        Err(e) => Err(VaultError::BadRequest(format!(
            "failed to parse JSON input: {e}"
        ))),
    }
}

/// A successful answer, written as Vault's envelope.
#[derive(Clone, Debug, Default)]
pub struct VaultResponse {
    /// `data`.
    pub data: Option<Value>,
    /// `auth` (token creation and login).
    pub auth: Option<Value>,
    /// `warnings`.
    pub warnings: Vec<String>,
    /// `mount_type` (the engine's type for requests to a secrets engine).
    pub mount_type: String,
    /// `lease_duration` (KV v1 reports its mount's default lease TTL).
    pub lease_duration: u64,
    /// `lease_id` (a dynamic secret's lease, e.g. `database/creds/ro/AbC…`; empty if none).
    pub lease_id: String,
    /// `renewable` (whether the lease can be renewed).
    pub renewable: bool,
    /// `204 No Content` instead of an envelope.
    pub no_content: bool,
    /// Fields added at the top level beside the envelope's (Vault repeats some tables there
    /// for old clients).
    pub top: Map<String, Value>,
    /// `wrap_info` (a wrapped response: `data` and `auth` are then empty).
    pub wrap_info: Option<Value>,
    /// `request_id` (random when empty).
    pub request_id: String,
    /// A whole envelope given as is (an unwrapped response); `request_id` is replaced.
    pub raw: Option<Map<String, Value>>,
    /// An envelope sent with another status than 200 (a transit batch with failed items is a
    /// 400 that still carries `batch_results`, as in Vault).
    pub status: Option<StatusCode>,
}

impl VaultResponse {
    /// An envelope with `data`.
    pub fn data(data: Value) -> VaultResponse {
        VaultResponse {
            data: Some(data),
            ..Default::default()
        }
    }

    /// An envelope with `auth` (a token's creation).
    pub fn auth(auth: Value) -> VaultResponse {
        VaultResponse {
            auth: Some(auth),
            ..Default::default()
        }
    }

    /// `204 No Content`.
    pub fn no_content() -> VaultResponse {
        VaultResponse {
            no_content: true,
            ..Default::default()
        }
    }

    /// Sets `mount_type`.
    pub fn with_mount_type(mut self, t: &str) -> VaultResponse {
        t.clone_into(&mut self.mount_type);
        self
    }

    /// The status this answer has.
    pub fn status(&self) -> StatusCode {
        if self.no_content {
            StatusCode::NO_CONTENT
        } else {
            self.status.unwrap_or(StatusCode::OK)
        }
    }
}

impl VaultResponse {
    /// The envelope as JSON (Vault's `{request_id, lease_id, …}`), consuming the answer.
    pub fn into_envelope(self) -> Map<String, Value> {
        let request_id = if self.request_id.is_empty() {
            request_id()
        } else {
            self.request_id
        };
        if let Some(mut raw) = self.raw {
            raw.insert("request_id".into(), Value::String(request_id));
            return raw;
        }
        let mut body = serde_json::json!({
            "request_id": request_id,
            "lease_id": self.lease_id,
            "renewable": self.renewable,
            "lease_duration": self.lease_duration,
            "data": self.data,
            "wrap_info": self.wrap_info,
            "warnings": if self.warnings.is_empty() { Value::Null } else { self.warnings.into() },
            "auth": self.auth,
            "mount_type": self.mount_type,
        });
        let mut m = match body.take() {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        for (k, v) in self.top {
            m.entry(k).or_insert(v);
        }
        m
    }
}

impl IntoResponse for VaultResponse {
    fn into_response(self) -> Response {
        if self.no_content {
            return StatusCode::NO_CONTENT.into_response();
        }
        let status = self.status.unwrap_or(StatusCode::OK);
        let body = Value::Object(self.into_envelope());
        let mut resp = (status, axum::Json(body)).into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

/// A random UUID v4, as Vault's `request_id`.
pub fn request_id() -> String {
    uuid_v4()
}

/// A random UUID v4 string (request ids, mount accessors' uuids).
pub(crate) fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    crate::util::fill_random(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::util::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A body field, with JSON `null` read as absent (as Vault's field parser does, and as
/// clients that send every optional parameter expect).
pub fn field<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    body.get(name).filter(|v| !v.is_null())
}

/// Reads a parameter as a string.
pub fn as_str<'a>(v: &'a Value, name: &str) -> Result<&'a str> {
    v.as_str()
        .ok_or_else(|| VaultError::bad_param(name, "a string"))
}

/// Reads a boolean parameter (`true`/`false`, or the strings Vault's clients send).
pub fn as_bool(v: &Value, name: &str) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" || s == "1" => Ok(true),
        Value::String(s) if s == "false" || s == "0" || s.is_empty() => Ok(false),
        _ => Err(VaultError::bad_param(name, "a boolean")),
    }
}

/// Reads an unsigned integer parameter (a number or a numeric string).
pub fn as_u64(v: &Value, name: &str) -> Result<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| VaultError::bad_param(name, "a non-negative integer")),
        Value::String(s) => s
            .parse()
            .map_err(|_| VaultError::bad_param(name, "a non-negative integer")),
        _ => Err(VaultError::bad_param(name, "a non-negative integer")),
    }
}

/// Reads a list of strings: a JSON array of strings, or a comma-separated string.
pub fn as_str_list(v: &Value, name: &str) -> Result<Vec<String>> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(|s| s.trim().to_owned())
                    .ok_or_else(|| VaultError::bad_param(name, "a list of strings"))
            })
            .filter(|r| r.as_ref().map_or(true, |s| !s.is_empty()))
            .collect(),
        Value::String(s) => Ok(s
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect()),
        Value::Null => Ok(Vec::new()),
        _ => Err(VaultError::bad_param(name, "a list of strings")),
    }
}

/// Reads a duration in seconds: a number, or a string like `"90"`, `"90s"`, `"15m"`, `"2h"`,
/// `"1h30m"`, `"7d"` (Vault's duration strings).
pub fn as_duration(v: &Value, name: &str) -> Result<u64> {
    let bad = || VaultError::bad_param(name, "a duration (seconds, or like \"1h30m\")");
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(bad),
        Value::String(s) => parse_duration(s).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// Parses Vault's duration strings; `None` if malformed.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        let mult = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(mult)?)?;
    }
    if !num.is_empty() {
        return None;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_vault() {
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("15m"), Some(900));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("7d"), Some(604_800));
        assert_eq!(parse_duration("1x"), None);
        assert_eq!(parse_duration("h"), None);
    }

    #[test]
    fn paths_refuse_traversal_and_nul() {
        assert!(normalize_path("secret/../sys").is_err());
        assert!(normalize_path("secret/%2e%2e/sys").is_err());
        assert!(normalize_path("secret/a%00b").is_err());
        assert_eq!(
            normalize_path("secret/data/a/").unwrap(),
            ("secret/data/a".to_owned(), true)
        );
    }

    #[test]
    fn tokens_come_from_either_header() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer hvs.abc"));
        assert_eq!(token_from(&h).as_deref(), Some("hvs.abc"));
        h.insert("x-vault-token", HeaderValue::from_static("hvs.def"));
        assert_eq!(token_from(&h).as_deref(), Some("hvs.def"));
    }
}
