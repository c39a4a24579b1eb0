//! PostgreSQL for the database engine: pools per connection, statement templating and
//! splitting, the default revocation (as Vault's `postgresql-database-plugin` does), the
//! SCRAM-SHA-256 verifier for `password_authentication = "scram-sha-256"`, and error text
//! that never carries a statement (it may hold a password).

use std::time::Duration;

use base64::Engine as _;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Config, NoTls};

use crate::api::{Result, VaultError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_WAIT: Duration = Duration::from_secs(10);

/// Parses a connection URL (templating already applied); refuses what cannot work here.
pub(crate) fn check_url(url: &str) -> Result<Config> {
    // tokio-postgres' parse errors name the offending option, never the password.
    let cfg: Config = url
        .parse()
        .map_err(|e| VaultError::BadRequest(format!("invalid connection_url: {}", describe(&e))))?;
    if !matches!(cfg.get_ssl_mode(), SslMode::Disable | SslMode::Prefer) {
        return Err(VaultError::BadRequest(
            "invalid connection_url: sslmode=require is not supported (no TLS connector is wired); use a local socket or a trusted network"
                .into(),
        ));
    }
    Ok(cfg)
}

/// A pool for `url` (templating already applied).
pub(crate) fn pool(url: &str, max: usize) -> Result<Pool> {
    let mut cfg = check_url(url)?;
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(CONNECT_TIMEOUT);
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name("warden-vault");
    }
    let mgr = Manager::from_config(
        cfg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(max)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(POOL_WAIT))
        .build()
        .map_err(|e| VaultError::Internal(format!("database pool: {e}")))
}

/// `{{username}}` and `{{password}}` in a connection URL. In a URL (`postgres://…`) they are
/// percent-encoded; in a `key=value` string they are put in single quotes.
pub(crate) fn render_url(url: &str, username: &str, password: &str) -> String {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let enc = |s: &str| {
        if is_url {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        } else {
            format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
        }
    };
    render(
        url,
        &[("username", &enc(username)), ("password", &enc(password))],
    )
}

/// Replaces `{{key}}` (also `{{ key }}`) by its value.
pub(crate) fn render(text: &str, vars: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
        out = out.replace(&format!("{{{{ {k} }}}}"), v);
    }
    out
}

/// Statements as Vault runs them: each entry split on `;`, blanks dropped. An entry holding
/// `$$` (a function body) is run whole.
pub(crate) fn split(statements: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for s in statements {
        if s.contains("$$") {
            if !s.trim().is_empty() {
                out.push(s.trim().to_owned());
            }
            continue;
        }
        out.extend(
            s.split(';')
                .map(str::trim)
                .filter(|q| !q.is_empty())
                .map(str::to_owned),
        );
    }
    out
}

/// A quoted SQL identifier.
pub(crate) fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Unix seconds as Vault's `{{expiration}}` (`2006-01-02 15:04:05+0000`).
pub(crate) fn expiration(secs: i64) -> String {
    crate::util::rfc3339(secs)
        .replace('T', " ")
        .replace('Z', "+0000")
}

/// What went wrong, safe to show and log: the SQLSTATE, with the server's message only for
/// connection and authentication errors (a message about a statement may quote part of it,
/// and a statement may hold a password).
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        if code.starts_with("28") || code.starts_with("08") || code.starts_with("3D") {
            return format!("{} (SQLSTATE {code})", db.message());
        }
        return format!("the statement failed (SQLSTATE {code})");
    }
    // Not from the server: I/O, timeouts, closed connections, configuration parse errors.
    let s = e.to_string();
    if s.contains("password") {
        "connection failed".to_owned()
    } else {
        s
    }
}

/// Whether the error is a conflict with a concurrent transaction (worth retrying):
/// `tuple concurrently updated` (XX000, concurrent GRANT/REVOKE on one object), a
/// serialization failure (40001) or a deadlock (40P01).
pub(crate) fn conflict(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|d| {
        let c = d.code().code();
        c == "40001" || c == "40P01" || (c == "XX000" && d.message().contains("concurrently"))
    })
}

/// A pool error, described safely.
pub(crate) fn describe_pool(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        deadpool_postgres::PoolError::Timeout(_) => "timed out connecting to the database".into(),
        other => format!("connection pool: {other}"),
    }
}

/// PostgreSQL's SCRAM-SHA-256 verifier of `password` (what `CREATE ROLE … PASSWORD` stores),
/// so the password itself need not cross the wire.
pub(crate) fn scram_verifier(password: &str) -> String {
    const ITER: u32 = 4096;
    let mut salt = [0u8; 16];
    crate::util::fill_random(&mut salt);
    let mut salted = [0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::new(ITER).unwrap_or(std::num::NonZeroU32::MIN),
        &salt,
        password.as_bytes(),
        &mut salted,
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salted);
    let client_key = ring::hmac::sign(&key, b"Client Key");
    let stored_key = ring::digest::digest(&ring::digest::SHA256, client_key.as_ref());
    let server_key = ring::hmac::sign(&key, b"Server Key");
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "SCRAM-SHA-256${ITER}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored_key.as_ref()),
        b64.encode(server_key.as_ref())
    )
}

/// Vault's default revocation for `name`: revoke what it was granted in each schema, on the
/// database and in `public`, then drop it.
pub(crate) async fn default_revoke(
    tx: &deadpool_postgres::Transaction<'_>,
    name: &str,
) -> Result<(), tokio_postgres::Error> {
    let rows = tx
        .query(
            "SELECT DISTINCT table_schema::text FROM information_schema.role_column_grants \
             WHERE grantee = $1 UNION \
             SELECT DISTINCT table_schema::text FROM information_schema.role_table_grants \
             WHERE grantee = $1",
            &[&name],
        )
        .await?;
    let user = ident(name);
    let mut stmts = Vec::new();
    for r in rows {
        let schema: String = r.get(0);
        let s = ident(&schema);
        stmts.push(format!(
            "REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA {s} FROM {user}"
        ));
        stmts.push(format!("REVOKE USAGE ON SCHEMA {s} FROM {user}"));
    }
    let db: String = tx
        .query_one("SELECT current_database()::text", &[])
        .await?
        .get(0);
    stmts.push(format!(
        "REVOKE ALL PRIVILEGES ON DATABASE {} FROM {user}",
        ident(&db)
    ));
    stmts.push(format!(
        "REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA public FROM {user}"
    ));
    stmts.push(format!(
        "REVOKE ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA public FROM {user}"
    ));
    stmts.push(format!(
        "REVOKE ALL PRIVILEGES ON ALL FUNCTIONS IN SCHEMA public FROM {user}"
    ));
    stmts.push(format!("REVOKE USAGE ON SCHEMA public FROM {user}"));
    stmts.push(format!("DROP ROLE IF EXISTS {user}"));
    for s in stmts {
        tx.batch_execute(&s).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_and_render() {
        let s = split(&[
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}'; GRANT x TO \"{{name}}\";"
                .into(),
            "  ".into(),
        ]);
        assert_eq!(s.len(), 2);
        let r = render(&s[0], &[("name", "v-a"), ("password", "pw")]);
        assert_eq!(r, "CREATE ROLE \"v-a\" WITH LOGIN PASSWORD 'pw'");
        assert_eq!(render("{{ name }}", &[("name", "n")]), "n");
    }

    #[test]
    fn urls_are_templated_with_escaping() {
        let u = render_url("postgres://{{username}}:{{password}}@h/db", "u", "p@ss/:w");
        assert_eq!(u, "postgres://u:p%40ss%2F%3Aw@h/db");
        let cfg: Config = u.parse().unwrap();
        assert_eq!(cfg.get_password(), Some(&b"p@ss/:w"[..]));
        let k = render_url(
            "host=h user={{username}} password={{password}}",
            "u",
            "a b'c",
        );
        let cfg: Config = k.parse().unwrap();
        assert_eq!(cfg.get_password(), Some(&b"a b'c"[..]));
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(expiration(0), "1970-01-01 00:00:00+0000");
    }

    #[test]
    fn scram_verifier_has_postgres_shape() {
        let v = scram_verifier("secret");
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        assert_eq!(v.matches('$').count(), 2);
        assert_ne!(v, scram_verifier("secret"), "salted");
    }
}
