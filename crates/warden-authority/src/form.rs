//! `application/x-www-form-urlencoded` request bodies, parsed strictly: a parameter sent
//! twice is an error (RFC 6749 §3.1), and so is a body that is not form-encoded.

use std::collections::HashMap;

use axum::http::{header, HeaderMap};
use percent_encoding::percent_decode_str;

use crate::error::{OAuthError, Refusal};

/// The parameters of a form body (empty values are treated as absent, RFC 6749 §3.1).
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Parses a body after checking its content type.
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Params, OAuthError> {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media = ct.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(Refusal::NotAForm.into());
        }
        Self::decode(body)
    }

    /// Decodes form-encoded bytes.
    pub fn decode(body: &[u8]) -> Result<Params, OAuthError> {
        let text = std::str::from_utf8(body).map_err(|_| Refusal::BadFormEncoding)?;
        let mut out = HashMap::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode_component(k).ok_or(Refusal::BadFormEncoding)?;
            let v = decode_component(v).ok_or(Refusal::BadFormEncoding)?;
            if v.is_empty() {
                continue;
            }
            if out.insert(k, v).is_some() {
                return Err(Refusal::RepeatedParameter.into());
            }
        }
        Ok(Params(out))
    }
}

/// Decodes one form component (`+` is a space, `%XX` a byte; the result must be UTF-8).
pub fn decode_component(s: &str) -> Option<String> {
    let spaced = s.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused_and_encoding_is_decoded() {
        let p = Params::decode(b"grant_type=client_credentials&scope=a+b%3Ac").unwrap();
        assert_eq!(p.get("scope"), Some("a b:c"));
        assert!(Params::decode(b"scope=a&scope=b").is_err());
        assert!(Params::decode(b"x=%FF").is_err());
        assert_eq!(Params::decode(b"scope=").unwrap().get("scope"), None);
    }
}
