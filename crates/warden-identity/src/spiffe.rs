//! SPIFFE IDs and trust domains, parsed as the SPIFFE ID standard says
//! (<https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md>): the scheme
//! `spiffe://`, a trust domain of lower-case letters, digits, `.`, `-` and `_`, and an
//! optional path of non-empty segments of letters, digits, `.`, `-` and `_` that are neither
//! `.` nor `..`; no port, user info, query or fragment, no trailing `/`, at most 2,048 bytes.

use std::fmt;
use std::str::FromStr;

/// The longest SPIFFE ID accepted, in bytes.
pub const MAX_ID_LEN: usize = 2048;
/// The longest trust domain name accepted, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

const SCHEME: &str = "spiffe://";

/// Why a string is not a SPIFFE ID or trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty input.
    #[error("is empty")]
    Empty,
    /// Longer than the standard allows.
    #[error("is longer than {0} bytes")]
    TooLong(usize),
    /// Does not start with `spiffe://`.
    #[error("must start with `spiffe://`")]
    Scheme,
    /// The trust domain is missing.
    #[error("has no trust domain")]
    NoTrustDomain,
    /// A character the trust domain may not hold (upper case, `:`, `@`, ...).
    #[error("trust domain holds {0:?}: only a-z, 0-9, '.', '-' and '_' are allowed")]
    TrustDomainChar(char),
    /// An empty path segment (`//` or a trailing `/`).
    #[error("path has an empty segment (`//` or a trailing `/`)")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("path has a `.` or `..` segment")]
    DotSegment,
    /// A character a path segment may not hold (`?`, `#`, `%`, ...).
    #[error("path holds {0:?}: only letters, digits, '.', '-' and '_' are allowed")]
    PathChar(char),
}

/// A trust domain: the name of one SPIFFE identity namespace (`example.org`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`) or a SPIFFE ID's trust domain
    /// (`spiffe://example.org`, with no path).
    pub fn new(name: &str) -> Result<Self, IdError> {
        let name = name.strip_prefix(SCHEME).unwrap_or(name);
        check_trust_domain(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The name (`example.org`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `spiffe://<name>`: the trust domain's own ID, as bundles and policies write it.
    pub fn id_string(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }

    /// The ID of `path` (`/ns/prod/sa/web`) in this trust domain.
    pub fn id(&self, path: &str) -> Result<SpiffeId, IdError> {
        check_path(path)?;
        let id = SpiffeId {
            full: format!("{SCHEME}{}{path}", self.0),
            td_len: self.0.len(),
        };
        if id.full.len() > MAX_ID_LEN {
            return Err(IdError::TooLong(MAX_ID_LEN));
        }
        Ok(id)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

/// A SPIFFE ID: `spiffe://<trust domain>[/<path>]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    full: String,
    td_len: usize,
}

impl SpiffeId {
    /// Parses a SPIFFE ID.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(IdError::TooLong(MAX_ID_LEN));
        }
        let rest = s.strip_prefix(SCHEME).ok_or(IdError::Scheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        check_trust_domain(td)?;
        check_path(path)?;
        Ok(Self {
            full: s.to_owned(),
            td_len: td.len(),
        })
    }

    /// The whole ID.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The trust domain's name.
    pub fn trust_domain_name(&self) -> &str {
        &self.full[SCHEME.len()..SCHEME.len() + self.td_len]
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_name().to_owned())
    }

    /// The path (`/ns/prod/sa/web`), empty for a trust domain's own ID.
    pub fn path(&self) -> &str {
        &self.full[SCHEME.len() + self.td_len..]
    }

    /// Whether this ID belongs to `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        self.trust_domain_name() == td.as_str()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.full)
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(|e| serde::de::Error::custom(format!("SPIFFE ID {s:?} {e}")))
    }
}

fn check_trust_domain(td: &str) -> Result<(), IdError> {
    if td.is_empty() {
        return Err(IdError::NoTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(IdError::TooLong(MAX_TRUST_DOMAIN_LEN));
    }
    match td
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        Some(c) => Err(IdError::TrustDomainChar(c)),
        None => Ok(()),
    }
}

fn check_path(path: &str) -> Result<(), IdError> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(IdError::PathChar(path.chars().next().unwrap_or('?')));
    };
    for seg in rest.split('/') {
        if seg.is_empty() {
            return Err(IdError::EmptySegment);
        }
        if seg == "." || seg == ".." {
            return Err(IdError::DotSegment);
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(IdError::PathChar(c));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_parse_into_trust_domain_and_path() {
        let id = SpiffeId::parse("spiffe://example.org/ns/prod/sa/web-1_a.b").unwrap();
        assert_eq!(id.trust_domain_name(), "example.org");
        assert_eq!(id.path(), "/ns/prod/sa/web-1_a.b");
        let td = SpiffeId::parse("spiffe://td_1-x.local").unwrap();
        assert_eq!(td.path(), "");
        assert_eq!(td.trust_domain().id_string(), "spiffe://td_1-x.local");
        let built = TrustDomain::new("example.org").unwrap().id("/web").unwrap();
        assert_eq!(built.as_str(), "spiffe://example.org/web");
        assert!(built.is_member_of(&TrustDomain::new("spiffe://example.org").unwrap()));
    }

    #[test]
    fn invalid_ids_are_refused_with_the_reason() {
        let cases = [
            ("", IdError::Empty),
            ("https://example.org/web", IdError::Scheme),
            ("SPIFFE://example.org/web", IdError::Scheme),
            ("spiffe://", IdError::NoTrustDomain),
            ("spiffe:///web", IdError::NoTrustDomain),
            ("spiffe://Example.org/web", IdError::TrustDomainChar('E')),
            (
                "spiffe://example.org:8443/web",
                IdError::TrustDomainChar(':'),
            ),
            (
                "spiffe://user@example.org/web",
                IdError::TrustDomainChar('@'),
            ),
            ("spiffe://example.org/", IdError::EmptySegment),
            ("spiffe://example.org//web", IdError::EmptySegment),
            ("spiffe://example.org/web/", IdError::EmptySegment),
            ("spiffe://example.org/./web", IdError::DotSegment),
            ("spiffe://example.org/a/../b", IdError::DotSegment),
            ("spiffe://example.org/web?x=1", IdError::PathChar('?')),
            ("spiffe://example.org/web#f", IdError::PathChar('#')),
            ("spiffe://example.org/w%20b", IdError::PathChar('%')),
        ];
        for (s, want) in cases {
            assert_eq!(SpiffeId::parse(s).unwrap_err(), want, "{s}");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(MAX_ID_LEN));
        assert_eq!(
            SpiffeId::parse(&long).unwrap_err(),
            IdError::TooLong(MAX_ID_LEN)
        );
        assert!(TrustDomain::new(&"a".repeat(256)).is_err());
    }
}
