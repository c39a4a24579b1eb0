//! Warden's vault: secrets behind the HashiCorp Vault / OpenBao HTTP API, so unmodified
//! clients (`hvac`, the Vault Go API and CLI) work against it.
//!
//! - [`api`]: the request/response surface every endpoint shares (Vault's envelope, its
//!   `{"errors": [...]}` bodies and status codes, token headers, method aliases, limits).
//! - `token`: service tokens (`hvs.…`) stored only as keyed hashes, with accessors,
//!   parent/child revocation, TTLs, periods, use limits and roles (`auth/token/…`).
//! - `policy`: ACL policies in Vault's HCL with Vault's matching and priority rules, cached
//!   parsed (`sys/policies/acl`, `sys/policy`, `sys/capabilities-self`).
//! - `mounts`: the secrets-engine and auth-method tables (`sys/mounts`, `sys/auth`,
//!   `sys/internal/ui/mounts`).
//! - `kv`: the KV secrets engine, versions 1 and 2.
//! - [`seal`], [`shamir`]: the seal (the store's key-encryption key is the vault's root key;
//!   unsealed automatically or by key shares); the authority serves its `sys/` endpoints.
//! - `approle`: the AppRole auth method (roles, role and secret ids, login, CIDR bindings).
//! - `wrapping`: response wrapping (`X-Vault-Wrap-TTL`, `sys/wrapping/…`): a response kept
//!   in a single-use token's cubbyhole.
//! - `audit_device`: audit devices (`sys/audit`, `sys/audit-hash`): Vault's `file` device,
//!   one JSON line per request and response with every secret HMAC'd; fail closed.
//! - `lease`: leases of dynamic secrets (`sys/leases/…`) and the task that revokes them when
//!   they expire, also after a restart.
//! - `database`: the database secrets engine (PostgreSQL logins with leases).
//! - `transit`: the transit secrets engine (encryption as a service: named keys, encrypt,
//!   decrypt, rewrap, data keys, HMAC, signatures, random bytes, hashes).
//!
//! Everything lives in `warden-store` under `vault/` (sealed by the store's keys); every
//! request appends an event to the store's audit chain (paths and outcomes, never values or
//! tokens). [`Vault::router`] serves the paths below `/v1/`; the authority nests it at `/v1`.

pub mod api;
mod approle;
mod audit;
mod audit_device;
mod database;
mod error;
mod kv;
mod lease;
mod mounts;
mod policy;
mod router;
pub mod seal;
pub mod shamir;
mod sys;
mod token;
mod transit;
mod util;
mod wrapping;

use std::sync::Arc;

use axum::Router;
use warden_store::Store;

pub use api::{Operation, VaultRequest, VaultResponse, MAX_REQUEST_BYTES};
pub use error::{Result, VaultError};
pub use mounts::MountEntry;
pub use policy::{Acl, Caps, Policy, PolicyError};
pub use token::TokenEntry;
pub use util::{Clock, ManualClock, SystemClock};

/// How to open a [`Vault`].
#[derive(Clone)]
pub struct VaultOptions {
    /// The clock tokens expire by.
    pub clock: Arc<dyn Clock>,
}

impl Default for VaultOptions {
    fn default() -> Self {
        VaultOptions {
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for VaultOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultOptions").finish_non_exhaustive()
    }
}

/// The vault. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    clock: Arc<dyn Clock>,
    tokens: token::TokenStore,
    policies: policy::store::PolicyStore,
    mounts: mounts::Mounts,
    kv_locks: kv::Locks,
    audit_devices: audit_device::AuditDevices,
    leases: lease::Leases,
    db: database::Pools,
    /// Dropped with the vault: tells the lease expiry task to stop.
    _stop: tokio::sync::watch::Sender<()>,
    transit_cache: transit::Cache,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens the vault on an open (unsealed) store: loads or creates the token HMAC key, the
    /// `default` policy and the mount tables.
    pub async fn open(store: Store, options: VaultOptions) -> Result<Vault> {
        // The KV engine reads through the store's cache (`Store::get_cached`), which is
        // right only while this process is the one writer: a vault opens when its authority
        // starts or becomes active, after another may have written.
        store.clear_cache();
        let tokens = token::TokenStore::open(store.clone(), Arc::clone(&options.clock)).await?;
        let policies = policy::store::PolicyStore::open(store.clone()).await?;
        let mounts = mounts::Mounts::open(store.clone()).await?;
        let audit_devices = audit_device::AuditDevices::open(store.clone()).await?;
        let wake = Arc::clone(&tokens.lease_wake);
        let leases =
            lease::Leases::new(store.clone(), Arc::clone(&options.clock), Arc::clone(&wake));
        let (stop, stopped) = tokio::sync::watch::channel(());
        let inner = Arc::new(Inner {
            store,
            clock: options.clock,
            tokens,
            policies,
            mounts,
            kv_locks: kv::Locks::new(),
            audit_devices,
            leases,
            db: database::Pools::default(),
            _stop: stop,
            transit_cache: transit::Cache::default(),
        });
        // Revokes expired leases (also those that expired while the process was down).
        lease::spawn_task(Arc::downgrade(&inner), wake, stopped);
        Ok(Vault { inner })
    }

    /// Revokes what is due now: expired leases, leases whose token expired or was revoked.
    /// The background task does the same every second (of real time, reading the vault's
    /// clock); tests with a `ManualClock` call this after moving the clock. Returns how many
    /// leases were revoked.
    pub async fn run_lease_expiry(&self) -> Result<usize> {
        self.inner.leases.run_due(self).await
    }

    /// The router for the paths below `/v1/` (nest it at `/v1`). Other services of the
    /// vault (the seal's `sys/init`, `sys/unseal`, …) can be merged in as explicit routes:
    /// axum prefers them to this router's catch-all.
    pub fn router(&self) -> Router {
        router::router(self.clone())
    }

    /// Creates the root token (policy `root`, no expiry): `sys/init` calls it once, and
    /// `warden dev` with a chosen `id` (`--root-token`). With an `id` that already names a
    /// root token, returns it unchanged.
    pub async fn create_root_token(&self, id: Option<&str>) -> Result<String> {
        self.inner.tokens.create_root(id).await
    }

    /// Enables a secrets engine at `path` (`"kv"` with `options` such as `version = "2"`), as
    /// `sys/mounts/:path` does; `warden dev` uses it for `secret/`. An existing mount of the
    /// same type at that path is left as it is.
    pub async fn enable_secrets_engine(
        &self,
        path: &str,
        engine: &str,
        options: &[(&str, &str)],
    ) -> Result<()> {
        let opts = options
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.inner
            .mounts
            .enable_if_absent(path, engine, opts, self.now())
            .await
    }

    /// The live token entry for `token` with its capabilities on `path` checked: `Ok` only
    /// if `cap` is allowed there (and `sudo` too where Vault requires it). For services that
    /// mount their own handlers (the seal's `sys/seal` needs a root or sudo token). Spends a
    /// use of a use-limited token.
    pub async fn authorize(
        &self,
        token: Option<&str>,
        path: &str,
        cap: Caps,
    ) -> Result<TokenEntry> {
        let entry = self.inner.tokens.authenticate(token).await?;
        let acl = self.inner.policies.acl(&entry.policies).await?;
        let mut need = cap;
        if policy::needs_sudo(path) {
            need = Caps(need.0 | Caps::SUDO.0);
        }
        if acl.allows(path, need) {
            Ok(entry)
        } else {
            Err(VaultError::PermissionDenied)
        }
    }

    /// The store the vault keeps its state in.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    fn now(&self) -> i64 {
        self.inner.clock.now()
    }
}
