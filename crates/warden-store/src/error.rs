//! The one error type of the store.
//!
//! Messages name keys (paths, which are not secret) and sequence numbers, never values or key
//! material, so an error can be logged as it is.

/// Why a store operation failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// A `PutIfAbsent` found its key already present (in `put_if_absent` this is `Ok(false)`
    /// instead; in `transact` nothing of the transaction was applied).
    #[error("conflict: the key already exists")]
    Conflict,
    /// Key material does not fit: a wrong key-encryption key, or a keyring that cannot be read.
    #[error("crypto: {0}")]
    Crypto(String),
    /// The database failed or could not be reached (I/O, connection, SQL error, closed store).
    #[error("storage backend: {0}")]
    Backend(String),
    /// Stored data is not what the store wrote: a value that does not authenticate under its
    /// key, a broken audit hash chain, a malformed row.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// A key (path) the store refuses: empty, too long, or containing NUL.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A value, an audit event or a request larger than the store accepts.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The database was migrated by a newer Warden than this one.
    #[error(
        "the database schema is version {found}, newer than this build of Warden supports \
         ({supported}); run a newer Warden against it"
    )]
    SchemaTooNew {
        /// The version recorded in the database.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The store is sealed: it holds no key-encryption key, so it can neither read nor
    /// write data (see `Store::unseal`).
    #[error("the store is sealed")]
    Sealed,
    /// `Store::unseal` on a store that was never initialized.
    #[error("the store is not initialized")]
    NotInitialized,
    /// `Store::initialize` on a store that already was.
    #[error("the store is already initialized")]
    AlreadyInitialized,
    /// `open` was given a location it cannot use.
    #[error("invalid store location: {0}")]
    InvalidLocation(String),
}

/// The store's result type.
pub type Result<T> = std::result::Result<T, StoreError>;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(format!("sqlite: {e}"))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // `Display` of a tokio-postgres error hides the server's message ("db error");
        // the server's message says what went wrong and holds no values we sent.
        match e.as_db_error() {
            Some(db) => {
                StoreError::Backend(format!("postgres: {}: {}", db.code().code(), db.message()))
            }
            None => StoreError::Backend(format!("postgres: {e}")),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Backend(format!("postgres pool: {other}")),
        }
    }
}
