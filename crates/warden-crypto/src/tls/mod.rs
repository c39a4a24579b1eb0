//! The one TLS stack: PEM loading, rustls server and client configs with Warden's provider and
//! versions, and a reloadable certificate store that serves by SNI.
//!
//! A [`CertStore`] holds the current [`CertSet`] behind an `ArcSwap`: every handshake reads
//! the set that is current when it starts, and a swap never touches connections already
//! established. File-backed stores are re-read when their files' stamps (mtime, length,
//! inode) change: by [`CertStore::watch`] (a small polling thread, so this crate needs no
//! async runtime and opens no sockets) or by [`CertStore::refresh`] (a config reload). A new
//! set replaces the old one only when every pair in it loads and each key matches its
//! certificate; otherwise the old set keeps serving and the failure is logged and counted.
//! Issued identities (the CA, the sidecar) are pushed with [`CertStore::publish`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::client::ResolvesClientCert;
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerSessionMemoryCache, StoresServerSessions,
    WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};

mod pem;
mod resolver;

pub use pem::{certified_key, load_certs, load_key, load_pair, load_roots, KeySource, PairPart};
pub use resolver::CertSet;

/// How often [`CertStore::watch`] looks at the files by default.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// A certificate chain file, its key, and the SNI names it serves.
#[derive(Clone, Debug, PartialEq)]
pub struct CertSource {
    /// PEM chain, leaf first.
    pub cert: PathBuf,
    /// The private key.
    pub key: KeySource,
    /// SNI names (`*.example.com` allowed); empty: the certificate's subjectAltNames.
    pub server_names: Vec<String>,
}

/// Client-certificate verification for a server config.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientAuth {
    /// PEM bundle of CAs that client certificates must chain to.
    pub ca: PathBuf,
    /// Without a certificate the handshake fails (`true`) or goes on unauthenticated.
    pub required: bool,
}

/// What a TLS error is about, for the caller to name the config field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsField {
    /// `certificates[i].cert`
    Cert(usize),
    /// `certificates[i].key`
    Key(usize),
    /// The client CA bundle.
    ClientCa,
    /// The client-certificate verifier as a whole.
    ClientAuth,
    /// The upstream trust bundle.
    Roots,
    /// The protocol set-up.
    Config,
}

/// A TLS set-up error: which field, and why (never key material).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TlsError {
    /// The field at fault.
    pub field: TlsField,
    /// What went wrong.
    pub message: String,
}

impl TlsError {
    fn new(field: TlsField, message: impl Into<String>) -> Self {
        TlsError {
            field,
            message: message.into(),
        }
    }
}

/// A file's identity and version: modification time, length, inode (an atomic rename changes
/// the inode even when time and length match).
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, m.len(), ino))
}

/// What one look at the files found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollOutcome {
    /// Nothing changed (or a failure already reported).
    Unchanged,
    /// A new set was loaded and swapped in.
    Reloaded,
    /// The files changed but do not load yet; tried again at the next look (a rotation that
    /// writes the certificate and the key one after the other passes through this).
    Pending,
    /// The files stayed broken for two looks: logged and counted; the old set keeps serving.
    Failed,
}

#[derive(Default)]
struct FileState {
    /// Stamps of the files behind the current set.
    loaded: Vec<Stamp>,
    /// Stamps of the files that last failed to load, and whether that failure was reported.
    failed: Option<(Vec<Stamp>, bool)>,
}

/// Told whether a change of files was swapped in (`true`) or refused (`false`).
pub type Observer = Box<dyn Fn(bool) + Send + Sync>;

/// The current certificates of a listener (or of a client), swapped as a whole when their
/// files change or an issuer publishes new ones. It is the listener's rustls cert resolver.
pub struct CertStore {
    current: ArcSwap<CertSet>,
    sources: Vec<CertSource>,
    files: Mutex<FileState>,
    reloads: AtomicU64,
    failures: AtomicU64,
    watching: AtomicBool,
    /// When the set was last swapped (ms after `born`, plus one; 0: never).
    swapped: AtomicU64,
    born: std::time::Instant,
    /// Told of each swap from files (`true`) and each reported failure (`false`): metrics.
    observer: OnceLock<Observer>,
    /// Names the store in logs (`listeners[0].tls`, `authority.tls`).
    label: String,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("label", &self.label)
            .field("certs", &self.current.load().len())
            .finish()
    }
}

fn load_set(sources: &[CertSource]) -> Result<CertSet, TlsError> {
    let mut certs = Vec::with_capacity(sources.len());
    for (i, s) in sources.iter().enumerate() {
        let ck = load_pair(&s.cert, &s.key).map_err(|(part, msg)| match part {
            PairPart::Cert => TlsError::new(TlsField::Cert(i), msg),
            PairPart::Key => TlsError::new(TlsField::Key(i), msg),
        })?;
        certs.push((ck, s.server_names.clone()));
    }
    Ok(CertSet::new(certs))
}

impl CertStore {
    /// Loads every pair now; an error names the first pair that does not load.
    pub fn load(sources: Vec<CertSource>, label: &str) -> Result<Arc<CertStore>, TlsError> {
        if sources.is_empty() {
            return Err(TlsError::new(TlsField::Config, "no certificate"));
        }
        let stamps = Self::stamps_of(&sources);
        let set = load_set(&sources)?;
        Ok(Arc::new(CertStore {
            current: ArcSwap::from_pointee(set),
            sources,
            files: Mutex::new(FileState {
                loaded: stamps,
                failed: None,
            }),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            watching: AtomicBool::new(false),
            swapped: AtomicU64::new(0),
            born: std::time::Instant::now(),
            observer: OnceLock::new(),
            label: label.to_owned(),
        }))
    }

    /// A store with no files, holding what an issuer publishes.
    pub fn in_memory(set: CertSet, label: &str) -> Arc<CertStore> {
        Arc::new(CertStore {
            current: ArcSwap::from_pointee(set),
            sources: Vec::new(),
            files: Mutex::new(FileState::default()),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            watching: AtomicBool::new(false),
            swapped: AtomicU64::new(0),
            born: std::time::Instant::now(),
            observer: OnceLock::new(),
            label: label.to_owned(),
        })
    }

    fn stamps_of(sources: &[CertSource]) -> Vec<Stamp> {
        sources
            .iter()
            .flat_map(|s| [Some(s.cert.as_path()), s.key.path()])
            .flatten()
            .map(stamp)
            .collect()
    }

    /// The sources this store was loaded from (a reload with the same sources keeps the store).
    pub fn sources(&self) -> &[CertSource] {
        &self.sources
    }

    /// The files this store reads.
    pub fn files(&self) -> Vec<PathBuf> {
        self.sources
            .iter()
            .flat_map(|s| [Some(s.cert.as_path()), s.key.path()])
            .flatten()
            .map(Path::to_path_buf)
            .collect()
    }

    /// The set serving now.
    pub fn current(&self) -> Arc<CertSet> {
        self.current.load_full()
    }

    /// Replaces the set (an issued identity). New handshakes use it at once.
    pub fn publish(&self, set: CertSet) {
        self.current.store(Arc::new(set));
        self.swapped();
    }

    /// Counts a swap and when it happened (after the new set is in place).
    fn swapped(&self) {
        let at = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        self.swapped.store(at, Ordering::Release);
        self.reloads.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether the set was swapped less than `grace` ago.
    fn swapped_within(&self, grace: Duration) -> bool {
        match self.swapped.load(Ordering::Acquire) {
            0 => false,
            at => {
                let since = Duration::from_millis(at - 1);
                self.born.elapsed().saturating_sub(since) < grace
            }
        }
    }

    /// Sets `observer` to hear of every swap from files and every reported failure (once per
    /// store; later calls are ignored, so a store kept across reloads reports once).
    pub fn observe(&self, observer: Observer) {
        let _ = self.observer.set(observer);
    }

    fn tell(&self, ok: bool) {
        if let Some(o) = self.observer.get() {
            o(ok);
        }
    }

    /// Sets swapped in since the store was made.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Changed files that did not load (reported, the old set kept).
    pub fn reload_failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn swap_in(&self, set: CertSet, stamps: Vec<Stamp>, files: &mut FileState) {
        let certs = set.len();
        self.current.store(Arc::new(set));
        files.loaded = stamps;
        files.failed = None;
        self.swapped();
        self.tell(true);
        tracing::info!(store = %self.label, certs, "certificates reloaded");
    }

    /// Re-reads the files if they changed since the current set was loaded, and fails if they
    /// do not load (the old set keeps serving). A config reload calls this, so a reload with
    /// broken certificate files is refused, as it was before the store existed.
    pub fn refresh(&self) -> Result<bool, TlsError> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let stamps = Self::stamps_of(&self.sources);
        if stamps == files.loaded {
            return Ok(false);
        }
        match load_set(&self.sources) {
            Ok(set) => {
                self.swap_in(set, stamps, &mut files);
                Ok(true)
            }
            Err(e) => {
                if !matches!(&files.failed, Some((f, _)) if *f == stamps) {
                    files.failed = Some((stamps, false));
                }
                Err(e)
            }
        }
    }

    /// One look at the files (what the watcher does every interval).
    pub fn poll(&self) -> PollOutcome {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let stamps = Self::stamps_of(&self.sources);
        if stamps == files.loaded {
            files.failed = None;
            return PollOutcome::Unchanged;
        }
        if matches!(&files.failed, Some((f, true)) if *f == stamps) {
            return PollOutcome::Unchanged;
        }
        let second_look = matches!(&files.failed, Some((f, false)) if *f == stamps);
        match load_set(&self.sources) {
            Ok(set) => {
                self.swap_in(set, stamps, &mut files);
                PollOutcome::Reloaded
            }
            Err(e) if second_look => {
                files.failed = Some((stamps, true));
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.tell(false);
                tracing::warn!(
                    store = %self.label,
                    field = ?e.field,
                    error = %e,
                    "changed certificate files do not load; the current certificates keep serving"
                );
                PollOutcome::Failed
            }
            Err(e) => {
                tracing::debug!(store = %self.label, error = %e, "certificate files changed but do not load yet");
                files.failed = Some((stamps, false));
                PollOutcome::Pending
            }
        }
    }

    /// Starts a thread that polls the files every `every` until the store is dropped. Once
    /// per store; nothing to do for a store without files. A thread rather than an async task:
    /// the work is blocking file IO, and this crate stays free of a runtime.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        if self.sources.is_empty() || self.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<CertStore> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("warden-cert-watch".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                let Some(store) = weak.upgrade() else { return };
                store.poll();
            });
        if let Err(e) = spawned {
            self.watching.store(false, Ordering::Release);
            tracing::error!(store = %self.label, error = %e, "cannot start the certificate watcher");
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load().pick(hello.server_name())
    }
}

/// The server's session cache (for TLS resumption), keeping only sessions made since the
/// store's last swap: a client that resumes skips the certificate, so without this it would
/// keep seeing the old one after a rotation (and, since a resumed session gets new tickets,
/// for ever). Each value is tagged with the swap count; for [`SWAP_GRACE`] after a swap no
/// session is stored at all, because a handshake that chose the old certificate just before
/// the swap may finish (and store its session) just after it.
#[derive(Debug)]
struct SessionsOfCurrentSet {
    inner: Arc<ServerSessionMemoryCache>,
    store: Arc<CertStore>,
}

/// After a swap, how long no session is stored for resumption.
const SWAP_GRACE: Duration = Duration::from_secs(2);

/// Sessions kept per listener (rustls' default size).
const SESSION_CACHE_SIZE: usize = 256;

impl SessionsOfCurrentSet {
    fn current(&self, value: Vec<u8>) -> Option<Vec<u8>> {
        let (tag, rest) = value.split_first_chunk::<8>()?;
        (u64::from_be_bytes(*tag) == self.store.reloads.load(Ordering::Acquire))
            .then(|| rest.to_vec())
    }
}

impl StoresServerSessions for SessionsOfCurrentSet {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        if self.store.swapped_within(SWAP_GRACE) {
            return false;
        }
        let mut tagged = Vec::with_capacity(8 + value.len());
        tagged.extend_from_slice(&self.store.reloads.load(Ordering::Acquire).to_be_bytes());
        tagged.extend_from_slice(&value);
        self.inner.put(key, tagged)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.get(key).and_then(|v| self.current(v))
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.take(key).and_then(|v| self.current(v))
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

/// Presents a store's first certificate as a client certificate.
#[derive(Debug)]
struct ClientCert(Arc<CertStore>);

impl ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0
            .current
            .load()
            .first()
            .filter(|k| k.key.choose_scheme(sigschemes).is_some())
    }

    fn has_certs(&self) -> bool {
        !self.0.current.load().is_empty()
    }
}

/// A server config serving `store` by SNI, with Warden's provider and versions, optional
/// client-certificate verification, and these ALPN protocols.
pub fn server_config(
    store: &Arc<CertStore>,
    client_auth: Option<&ClientAuth>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crate::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(crate::TLS_VERSIONS)
        .map_err(|e| TlsError::new(TlsField::Config, e.to_string()))?;
    let builder = match client_auth {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = load_roots(&ca.ca).map_err(|e| TlsError::new(TlsField::ClientCa, e))?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if ca.required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::new(TlsField::ClientAuth, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(store.clone());
    config.session_storage = Arc::new(SessionsOfCurrentSet {
        inner: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
        store: store.clone(),
    });
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client config trusting the CAs in `ca`, presenting the first certificate of `client`
/// (which may rotate) when given.
pub fn client_config(ca: &Path, client: Option<&Arc<CertStore>>) -> Result<ClientConfig, TlsError> {
    let roots = load_roots(ca).map_err(|e| TlsError::new(TlsField::Roots, e))?;
    let builder = ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(crate::TLS_VERSIONS)
        .map_err(|e| TlsError::new(TlsField::Config, e.to_string()))?
        .with_root_certificates(roots);
    Ok(match client {
        Some(store) => builder.with_client_cert_resolver(Arc::new(ClientCert(store.clone()))),
        None => builder.with_no_client_auth(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DevCa;

    struct Files {
        _dir: tempfile::TempDir,
        cert: PathBuf,
        key: PathBuf,
    }

    fn replace(path: &Path, contents: &str) {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn issue(ca: &DevCa) -> crate::IssuedCert {
        ca.server_cert(&["localhost"]).unwrap()
    }

    fn files(c: &crate::IssuedCert) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("c.key"));
        std::fs::write(&cert, &c.cert_pem).unwrap();
        std::fs::write(&key, &*c.key_pem).unwrap();
        Files {
            _dir: dir,
            cert,
            key,
        }
    }

    fn store(f: &Files) -> Arc<CertStore> {
        CertStore::load(
            vec![CertSource {
                cert: f.cert.clone(),
                key: KeySource::File(f.key.clone()),
                server_names: vec![],
            }],
            "test",
        )
        .unwrap()
    }

    fn serving(s: &CertStore) -> Vec<u8> {
        s.current().first().unwrap().cert[0].to_vec()
    }

    fn leaf(c: &crate::IssuedCert) -> Vec<u8> {
        load_certs_from(&c.cert_pem)
    }

    fn load_certs_from(pem: &str) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn a_rotation_in_two_renames_is_swapped_in_without_a_failure() {
        let ca = DevCa::new("store test").unwrap();
        let (one, two) = (issue(&ca), issue(&ca));
        let f = files(&one);
        let s = store(&f);
        assert_eq!(s.poll(), PollOutcome::Unchanged);
        // The certificate lands first: the pair does not match yet.
        replace(&f.cert, &two.cert_pem);
        assert_eq!(s.poll(), PollOutcome::Pending);
        assert_eq!(serving(&s), leaf(&one), "a mismatched pair must not serve");
        replace(&f.key, &two.key_pem);
        assert_eq!(s.poll(), PollOutcome::Reloaded);
        assert_eq!(serving(&s), leaf(&two));
        assert_eq!((s.reloads(), s.reload_failures()), (1, 0));
        assert_eq!(s.poll(), PollOutcome::Unchanged);
    }

    #[test]
    fn a_broken_replacement_keeps_the_old_set_and_is_counted_once() {
        let ca = DevCa::new("store test").unwrap();
        let one = issue(&ca);
        let f = files(&one);
        let s = store(&f);
        let seen = Arc::new(AtomicU64::new(0));
        let told = seen.clone();
        s.observe(Box::new(move |ok| {
            assert!(!ok);
            told.fetch_add(1, Ordering::Relaxed);
        }));
        replace(&f.key, "not a key\n");
        assert_eq!(s.poll(), PollOutcome::Pending);
        assert_eq!(s.poll(), PollOutcome::Failed);
        assert_eq!(s.poll(), PollOutcome::Unchanged, "reported once");
        assert_eq!(s.reload_failures(), 1);
        assert_eq!(seen.load(Ordering::Relaxed), 1);
        assert_eq!(serving(&s), leaf(&one));
        // A config reload asks strictly: refused, naming the key.
        let e = s.refresh().unwrap_err();
        assert_eq!(e.field, TlsField::Key(0));
        assert!(
            !e.message.contains("not a key"),
            "no key material in errors"
        );
    }

    #[test]
    fn the_watcher_swaps_within_its_interval_and_ends_with_the_store() {
        let ca = DevCa::new("store test").unwrap();
        let (one, two) = (issue(&ca), issue(&ca));
        let f = files(&one);
        let s = store(&f);
        s.watch(Duration::from_millis(20));
        replace(&f.key, &two.key_pem);
        replace(&f.cert, &two.cert_pem);
        let start = std::time::Instant::now();
        while serving(&s) != leaf(&two) {
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "not swapped in 1 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let weak = Arc::downgrade(&s);
        drop(s);
        assert!(
            weak.upgrade().is_none(),
            "the watcher must not keep the store"
        );
    }

    #[test]
    fn client_config_presents_the_stores_first_certificate() {
        let ca = DevCa::new("store test").unwrap();
        let one = issue(&ca);
        let f = files(&one);
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        let s = store(&f);
        let cfg = client_config(&ca_file, Some(&s)).unwrap();
        assert!(cfg.client_auth_cert_resolver.has_certs());
        assert!(
            client_config(&f.key, None).is_err(),
            "a key is no CA bundle"
        );
    }
}
