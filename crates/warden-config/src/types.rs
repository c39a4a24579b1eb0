//! Value types that parse once, at load time: durations, byte sizes, CIDR blocks, regexes,
//! and references to secrets. Each deserialises from the string a person writes in TOML and
//! says plainly what was wrong when it cannot.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use zeroize::Zeroizing;

/// A duration written as `500ms`, `30s`, `5m`, `1h` or `1d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// Seconds.
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    /// Milliseconds.
    pub const fn millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
}

/// Parses `500ms`, `30s`, `5m`, `1h`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` has no unit; write e.g. `30s`, `500ms`, `5m`"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` does not start with a whole number"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86400)),
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{unit}` (use ms, s, m, h or d)"
            ))
        }
    };
    Ok(d)
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            s.serialize_str(&format!("{}s", ms / 1000))
        } else {
            s.serialize_str(&format!("{ms}ms"))
        }
    }
}

/// A size in bytes, written as an integer or as `64KiB`, `10MiB`, `1GiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_bytes(&s).map(ByteSize).map_err(de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 65536, `64KiB`, `10MiB`)"))?;
    let mul = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1024,
        "MiB" | "M" | "MB" => 1024 * 1024,
        "GiB" | "G" | "GB" => 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "`{s}`: unknown size unit `{other}` (use KiB, MiB, GiB)"
            ))
        }
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `::1/128`); a bare address means a single host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(pub ipnet::IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Ok(net) = s.parse::<ipnet::IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        s.parse::<std::net::IpAddr>()
            .map(|ip| Cidr(ipnet::IpNet::from(ip)))
            .map_err(|_| de::Error::custom(format!("`{s}` is not an IP address or CIDR block")))
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

/// A regular expression, compiled when the config loads. Matches are anchored by the user
/// (write `^…$` for a whole-string match).
#[derive(Clone)]
pub struct RegexStr(pub regex::Regex);

impl fmt::Debug for RegexStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

impl PartialEq for RegexStr {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl<'de> Deserialize<'de> for RegexStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        regex::RegexBuilder::new(&s)
            .size_limit(1 << 20)
            .build()
            .map(RegexStr)
            .map_err(|e| de::Error::custom(format!("invalid regex: {e}")))
    }
}

impl Serialize for RegexStr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// What a rate limit counts by: one key (`"client_ip"`) or a combination written as a list
/// (`["subject", "header:x-tenant"]`), where each distinct combination of values has its own
/// bucket. Written back as it was: a string for one key, a list for several.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitKeys(pub Vec<String>);

impl LimitKeys {
    /// The parts, in the order written.
    pub fn parts(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for LimitKeys {
    /// The parts joined with `+` (`subject+header:x-tenant`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("+"))
    }
}

impl<'de> Deserialize<'de> for LimitKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        match OneOrMany::deserialize(d)
            .map_err(|_| de::Error::custom("expected a key (\"client_ip\") or a list of keys"))?
        {
            OneOrMany::One(s) => Ok(LimitKeys(vec![s])),
            OneOrMany::Many(v) => Ok(LimitKeys(v)),
        }
    }
}

impl Serialize for LimitKeys {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

/// The largest secret file read (keys, certificates' keys, tokens).
pub const MAX_SECRET_BYTES: u64 = 1024 * 1024;

/// Where a secret lives: `env:NAME`, `file:PATH` or `vault:<mount>/<path>#<field>`. Config
/// never holds a secret itself, so a config dump is safe to show; the value is read when the
/// config is compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    /// An environment variable.
    Env(String),
    /// A file (its whole content; a trailing newline is kept for PEM, trimmed for tokens).
    File(PathBuf),
    /// A field of a secret in a Vault-compatible server, read by the `[vault]` client before
    /// the config is compiled (never by [`SecretRef::read`]).
    Vault(VaultRef),
}

/// `vault:<mount>/<path>#<field>`: the secret at `<mount>/<path>` (KV v2 mounts get `data/`
/// inserted, as the Vault CLI does) and one field of its data.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VaultRef {
    /// `<mount>/<path>`, without a leading or trailing `/`.
    pub path: String,
    /// The field of the secret's data.
    pub field: String,
}

/// The longest `vault:` path accepted (the vault's own limit).
pub const MAX_VAULT_PATH_BYTES: usize = 384;

impl VaultRef {
    /// Parses `<mount>/<path>#<field>` (what follows `vault:`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let form =
            "write `vault:<mount>/<path>#<field>`, e.g. `vault:secret/gateway/redis#password`";
        let Some((path, field)) = s.split_once('#') else {
            return Err(format!("`vault:` needs a field after `#`: {form}"));
        };
        if field.is_empty() || field.len() > 256 || field.chars().any(char::is_control) {
            return Err(format!(
                "`vault:` field must be 1 to 256 printable characters: {form}"
            ));
        }
        if path.is_empty() || path.len() > MAX_VAULT_PATH_BYTES {
            return Err(format!(
                "`vault:` path must be 1 to {MAX_VAULT_PATH_BYTES} bytes: {form}"
            ));
        }
        let segments: Vec<&str> = path.split('/').collect();
        if segments.len() < 2 {
            return Err(format!(
                "`vault:` path needs a mount and a secret path: {form}"
            ));
        }
        for seg in &segments {
            if seg.is_empty() || *seg == "." || *seg == ".." {
                return Err(format!(
                    "`vault:` path has an empty, `.` or `..` segment: {form}"
                ));
            }
            if seg
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '?' | '%'))
            {
                return Err(format!(
                    "`vault:` path may not contain spaces, control characters, `?` or `%`: {form}"
                ));
            }
        }
        Ok(VaultRef {
            path: path.to_owned(),
            field: field.to_owned(),
        })
    }
}

impl fmt::Display for VaultRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vault:{}#{}", self.path, self.field)
    }
}

/// Errors reading a secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The variable is not set or not UTF-8.
    #[error("environment variable `{0}` is not set")]
    MissingEnv(String),
    /// The file cannot be read.
    #[error("cannot read `{path}`: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A `vault:` reference, which only the `[vault]` client resolves.
    #[error("`{0}` is resolved by the [vault] client, not read from this process")]
    NotLocal(String),
    /// The resolver has no value for this reference (a vault secret not fetched, or fetched
    /// without the field).
    #[error("`{0}`: {1}")]
    Unresolved(String, String),
}

impl SecretRef {
    /// Parses `env:NAME` or `file:PATH`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(name) = s.strip_prefix("env:") {
            if name.is_empty() {
                return Err("`env:` needs a variable name".into());
            }
            return Ok(SecretRef::Env(name.to_owned()));
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err("`file:` needs a path".into());
            }
            return Ok(SecretRef::File(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("vault:") {
            return VaultRef::parse(rest).map(SecretRef::Vault);
        }
        Err(
            "secrets are referenced, not written inline: use `env:NAME`, `file:PATH` or \
             `vault:<mount>/<path>#<field>`"
                .into(),
        )
    }

    /// True for `env:` and `file:` references, which this process reads itself.
    pub fn is_local(&self) -> bool {
        !matches!(self, SecretRef::Vault(_))
    }

    /// The `vault:` reference, if it is one.
    pub fn vault(&self) -> Option<&VaultRef> {
        match self {
            SecretRef::Vault(v) => Some(v),
            _ => None,
        }
    }

    /// Validation's check: a local reference must read; a `vault:` one is checked when the
    /// vault client fetches it.
    pub fn check_local(&self) -> Result<(), SecretError> {
        if self.is_local() {
            self.read().map(drop)
        } else {
            Ok(())
        }
    }

    /// Reads the secret's bytes; they are wiped from memory when dropped. A file must be a
    /// regular file of at most [`MAX_SECRET_BYTES`] (not a pipe or a device that never ends).
    pub fn read(&self) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        match self {
            SecretRef::Env(name) => std::env::var(name)
                .map(|v| Zeroizing::new(v.into_bytes()))
                .map_err(|_| SecretError::MissingEnv(name.clone())),
            SecretRef::File(path) => {
                use std::io::Read;
                let fail = |source| SecretError::File {
                    path: path.clone(),
                    source,
                };
                let meta = std::fs::metadata(path).map_err(fail)?;
                if !meta.is_file() {
                    return Err(fail(std::io::Error::other("not a regular file")));
                }
                let mut buf = Zeroizing::new(Vec::new());
                std::fs::File::open(path)
                    .map_err(fail)?
                    .take(MAX_SECRET_BYTES + 1)
                    .read_to_end(&mut buf)
                    .map_err(fail)?;
                if buf.len() as u64 > MAX_SECRET_BYTES {
                    return Err(fail(std::io::Error::other(format!(
                        "larger than {MAX_SECRET_BYTES} bytes"
                    ))));
                }
                Ok(buf)
            }
            SecretRef::Vault(v) => Err(SecretError::NotLocal(v.to_string())),
        }
    }

    /// Reads a one-line text secret (a password), without its line ending.
    pub fn read_line(&self) -> Result<Zeroizing<String>, String> {
        Self::one_line(self.read().map_err(|e| e.to_string())?)
    }

    /// A secret's bytes as one line of text, without its line ending.
    pub fn one_line(bytes: Zeroizing<Vec<u8>>) -> Result<Zeroizing<String>, String> {
        let text = std::str::from_utf8(&bytes).map_err(|_| "must be UTF-8 text".to_string())?;
        let line = text.trim_end_matches(['\r', '\n']);
        if line.is_empty() || line.contains(['\r', '\n']) {
            return Err("must be one line of text".into());
        }
        Ok(Zeroizing::new(line.to_owned()))
    }

    /// The file behind the secret, if it is one (watched for changes).
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            SecretRef::File(p) => Some(p),
            SecretRef::Env(_) | SecretRef::Vault(_) => None,
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
            SecretRef::Vault(v) => v.fmt(f),
        }
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SecretRef::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A point in time, written as an RFC 3339 string (`"2027-01-01T00:00:00Z"`) or a TOML
/// offset date-time; held as seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Parses RFC 3339 (`2027-01-01T00:00:00Z`, `2027-01-01T02:00:00+02:00`; fractions of a
    /// second are dropped).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not an RFC 3339 time such as 2027-01-01T00:00:00Z");
        // Only ASCII can be RFC 3339; checking first keeps every slice below on a char
        // boundary (the config_parse fuzz target found a panic on `+00é0`).
        if !s.is_ascii() {
            return Err(bad());
        }
        let b = s.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't' | b' ')
            || b[13] != b':'
            || b[16] != b':'
        {
            return Err(bad());
        }
        let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
            s.get(r)
                .filter(|t| t.bytes().all(|c| c.is_ascii_digit()))
                .and_then(|t| t.parse().ok())
                .ok_or_else(bad)
        };
        let (y, mo, d, h, mi, se) = (
            num(0..4)?,
            num(5..7)?,
            num(8..10)?,
            num(11..13)?,
            num(14..16)?,
            num(17..19)?,
        );
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
            return Err(bad());
        }
        let mut rest = &s[19..];
        if let Some(frac) = rest.strip_prefix('.') {
            let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            rest = &frac[digits..];
        }
        let offset = match rest {
            "Z" | "z" => 0,
            o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
                let oh: i64 = o[1..3].parse().map_err(|_| bad())?;
                let om: i64 = o[4..6].parse().map_err(|_| bad())?;
                let v = oh * 3600 + om * 60;
                if o.starts_with('-') {
                    -v
                } else {
                    v
                }
            }
            _ => return Err(bad()),
        };
        // Days from the civil date (Howard Hinnant's algorithm).
        let (yy, m) = if mo <= 2 {
            (y - 1, mo + 9)
        } else {
            (y, mo - 3)
        };
        let era = yy.div_euclid(400);
        let yoe = yy - era * 400;
        let doy = (153 * m + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let t = days * 86_400 + h * 3600 + mi * 60 + se - offset;
        if t < 0 {
            // Before 1970 means nothing for expiries, and years before 1 cannot be written back.
            return Err(format!("`{s}` is before 1970-01-01T00:00:00Z"));
        }
        Ok(Timestamp(t))
    }

    /// Formats as RFC 3339 in UTC.
    pub fn to_rfc3339(self) -> String {
        let days = self.0.div_euclid(86_400);
        let secs = self.0.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            Dt(toml::value::Datetime),
        }
        let s = match Raw::deserialize(d)? {
            Raw::S(s) => s,
            Raw::Dt(dt) => dt.to_string(),
        };
        Timestamp::parse(&s).map_err(de::Error::custom)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_rfc3339_and_round_trip() {
        let t = Timestamp::parse("2027-01-01T00:00:00Z").unwrap();
        assert_eq!(t.0, 1_798_761_600);
        assert_eq!(t.to_rfc3339(), "2027-01-01T00:00:00Z");
        assert_eq!(Timestamp::parse("2027-01-01T02:00:00.5+02:00").unwrap(), t);
        assert_eq!(Timestamp::parse("1970-01-01T00:00:00Z").unwrap().0, 0);
        assert!(Timestamp::parse("2027-13-01T00:00:00Z").is_err());
        assert!(Timestamp::parse("tomorrow").is_err());
        assert!(Timestamp::parse("2027-01-01T00:00:00+00é0").is_err());
        assert!(Timestamp::parse("0000-01-01T00:00:00+00:01").is_err());
        #[derive(Deserialize)]
        struct W {
            t: Timestamp,
        }
        let w: W = toml::from_str("t = 2027-01-01T00:00:00Z").unwrap();
        assert_eq!(w.t, t);
        let w: W = toml::from_str("t = \"2027-01-01T00:00:00Z\"").unwrap();
        assert_eq!(w.t, t);
    }

    #[test]
    fn durations_parse_with_units_and_reject_bare_numbers() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("3x").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_bytes("64KiB").unwrap(), 65536);
        assert_eq!(parse_bytes("10MiB").unwrap(), 10 * 1024 * 1024);
        assert!(parse_bytes("ten").is_err());
    }

    #[test]
    fn secrets_must_be_references() {
        assert_eq!(
            SecretRef::parse("env:TLS_KEY").unwrap(),
            SecretRef::Env("TLS_KEY".into())
        );
        assert!(SecretRef::parse("-----BEGIN PRIVATE KEY-----")
            .unwrap_err()
            .contains("env:NAME"));
    }

    #[test]
    fn vault_references_parse_mount_path_and_field_and_refuse_what_is_not_one() {
        let r = SecretRef::parse("vault:secret/gateway/redis#password").unwrap();
        assert_eq!(
            r,
            SecretRef::Vault(VaultRef {
                path: "secret/gateway/redis".into(),
                field: "password".into()
            })
        );
        assert_eq!(r.to_string(), "vault:secret/gateway/redis#password");
        assert!(!r.is_local());
        assert!(r.path().is_none());
        assert!(matches!(r.read(), Err(SecretError::NotLocal(_))));
        assert!(r.check_local().is_ok());
        for bad in [
            "vault:secret/redis",
            "vault:secret/redis#",
            "vault:redis#password",
            "vault:/secret/redis#password",
            "vault:secret//redis#password",
            "vault:secret/../sys#x",
            "vault:secret/a b#x",
            "vault:secret/a?list=true#x",
            "vault:secret/a\u{0}#x",
        ] {
            assert!(SecretRef::parse(bad).is_err(), "{bad} parsed");
        }
        let long = format!("vault:secret/{}#x", "a".repeat(MAX_VAULT_PATH_BYTES));
        assert!(SecretRef::parse(&long).unwrap_err().contains("384"));
    }
}

/// Turns secret references into their bytes, for whoever compiles a config (the proxy's
/// snapshot compiler takes one). [`LocalSecrets`] reads `env:` and `file:` references; a
/// resolver for another store (a vault) plugs in here without changing its callers.
pub trait SecretResolver: Send + Sync {
    /// The secret's bytes, wiped from memory when dropped.
    fn resolve(&self, secret: &SecretRef) -> Result<Zeroizing<Vec<u8>>, SecretError>;

    /// A one-line text secret (a password), without its line ending.
    fn resolve_line(&self, secret: &SecretRef) -> Result<Zeroizing<String>, String> {
        SecretRef::one_line(self.resolve(secret).map_err(|e| e.to_string())?)
    }
}

/// `env:` and `file:` references, read from this process's environment and files.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalSecrets;

impl SecretResolver for LocalSecrets {
    fn resolve(&self, secret: &SecretRef) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        secret.read()
    }
}

/// A config string parsed once, when the config is read: the text as written (for the config
/// dump and messages) and its typed value, which is `None` when the text does not parse.
/// Validation reports every `None` with its path, so the values of a validated config are all
/// there and nothing downstream parses the text again (or drops what does not parse).
#[derive(Clone, Debug)]
pub struct Parsed<T> {
    text: String,
    value: Option<T>,
}

/// A method name (`GET`, `PURGE`), parsed once.
pub type MethodName = Parsed<http::Method>;

/// A header name, parsed once (and so lower-cased).
pub type HeaderNameText = Parsed<http::HeaderName>;

impl<T: std::str::FromStr> Parsed<T> {
    /// Parses `text`.
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let value = text.parse().ok();
        Self { text, value }
    }
}

impl<T> Parsed<T> {
    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The typed value; `None` only in a config that did not validate.
    pub fn value(&self) -> Option<&T> {
        self.value.as_ref()
    }
}

impl<T> PartialEq for Parsed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl<T> fmt::Display for Parsed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<T> Serialize for Parsed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de, T: std::str::FromStr> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}
