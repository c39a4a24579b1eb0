//! CORS per route (Fetch standard): preflights are answered at the gateway and never reach
//! the upstream; actual requests from allowed origins get the response headers browsers need.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use warden_config::CorsConfig;

pub(crate) struct Cors {
    any_origin: bool,
    origins: Vec<String>,
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    headers: Vec<String>,
    allow_headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

/// What a preflight check decided.
pub(crate) enum Preflight {
    /// Answer with these headers (204).
    Allowed(Response<()>),
    /// Refuse (403).
    Denied,
}

fn join(items: &[String]) -> Option<HeaderValue> {
    (!items.is_empty())
        .then(|| HeaderValue::from_str(&items.join(", ")).ok())
        .flatten()
}

impl Cors {
    pub(crate) fn compile(c: &CorsConfig) -> Self {
        // Typed when the config was read (validation refuses a method that is not one).
        let methods: Vec<Method> = c
            .allowed_methods
            .iter()
            .filter_map(|m| m.value().cloned())
            .collect();
        let method_names: Vec<String> = c
            .allowed_methods
            .iter()
            .map(|m| m.as_str().to_owned())
            .collect();
        let headers: Vec<String> = c
            .allowed_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        Self {
            any_origin: c.allowed_origins.iter().any(|o| o == "*"),
            origins: c.allowed_origins.clone(),
            allow_methods: join(&method_names).unwrap_or_else(|| HeaderValue::from_static("GET")),
            allow_headers: join(&headers),
            headers,
            methods,
            expose: join(&c.exposed_headers),
            credentials: c.allow_credentials,
            max_age: HeaderValue::from(c.max_age.0.as_secs()),
        }
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.any_origin || self.origins.iter().any(|o| o == origin)
    }

    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// Is this request a CORS preflight?
    pub(crate) fn is_preflight(method: &Method, h: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && h.contains_key(header::ORIGIN)
            && h.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// Answers a preflight.
    pub(crate) fn preflight(&self, h: &HeaderMap) -> Preflight {
        let Some(origin) = h.get(header::ORIGIN) else {
            return Preflight::Denied;
        };
        let origin_ok = origin.to_str().is_ok_and(|o| self.origin_allowed(o));
        let method_ok = h
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .is_some_and(|m| self.methods.contains(&m));
        let headers_ok = h
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .all(|s| self.headers.contains(&s));
        if !(origin_ok && method_ok && headers_ok) {
            return Preflight::Denied;
        }
        let mut res = Response::new(());
        *res.status_mut() = StatusCode::NO_CONTENT;
        let rh = res.headers_mut();
        rh.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin_value(origin),
        );
        rh.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        );
        if let Some(v) = &self.allow_headers {
            rh.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
        if self.credentials {
            rh.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        rh.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        rh.insert(
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        Preflight::Allowed(res)
    }

    /// Adds CORS headers to an actual response when the request's origin is allowed.
    /// The route's policy is the only source of CORS headers: whatever the upstream sent is
    /// removed first, so an upstream cannot widen what the gateway allows.
    pub(crate) fn apply(&self, origin: Option<&HeaderValue>, res: &mut HeaderMap) {
        for h in [
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            header::ACCESS_CONTROL_ALLOW_METHODS,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            header::ACCESS_CONTROL_MAX_AGE,
        ] {
            res.remove(h);
        }
        res.append(header::VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = origin else { return };
        if !origin.to_str().is_ok_and(|o| self.origin_allowed(o)) {
            return;
        }
        res.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin_value(origin),
        );
        if self.credentials {
            res.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(v) = &self.expose {
            res.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }
}
