//! The agent's state on disk (`[sidecar] state_dir`), so a restarted sidecar keeps its
//! identity: the current SVID chain (`svid.pem`), its private key (`svid.key`, PKCS#8 PEM)
//! and the trust bundle (`bundle.json`). Files are written 0600 in a 0700 directory, each
//! through a temporary file renamed over the old one (a crash leaves the old or the new,
//! never half of one). Without a `state_dir` nothing is written and a restart needs a new
//! join token.
//!
//! At start a stored SVID that has not expired is renewed with its own key (the authority
//! checks it as for any renewal, so a revoked workload cannot come back this way); while the
//! authority cannot be reached the sidecar serves with it, as it would have had it not
//! restarted.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use serde_json::Value;
use zeroize::Zeroizing;

use warden_identity::ca::pem;

use crate::AgentError;

const SVID: &str = "svid.pem";
const KEY: &str = "svid.key";
const BUNDLE: &str = "bundle.json";

/// What was stored: the chain, the key (PKCS#8 DER) and the bundle document.
pub(crate) struct Stored {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Zeroizing<Vec<u8>>,
    pub bundle: Value,
}

fn local(what: &str, path: &Path, e: impl std::fmt::Display) -> AgentError {
    AgentError::Local(format!("state {what} {}: {e}", path.display()))
}

/// Makes `dir` (0700) if needed and refuses one that others may read or write.
pub(crate) fn prepare(dir: &Path) -> Result<(), AgentError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| local("directory", dir, e))?;
    let mode = std::fs::metadata(dir)
        .map_err(|e| local("directory", dir, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(AgentError::Local(format!(
            "state directory {} is open to other users (mode {:o}); it holds a private key: \
             make it 0700",
            dir.display(),
            mode & 0o777
        )));
    }
    Ok(())
}

/// Reads the stored state; `None` when there is none (a first start).
pub(crate) fn load(dir: &Path) -> Result<Option<Stored>, AgentError> {
    let path = |f: &str| dir.join(f);
    if !path(SVID).exists() || !path(KEY).exists() {
        return Ok(None);
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path(SVID))
        .and_then(Iterator::collect)
        .map_err(|e| local("file", &path(SVID), e))?;
    if chain.is_empty() {
        return Err(local("file", &path(SVID), "no certificate"));
    }
    let key =
        PrivatePkcs8KeyDer::from_pem_file(path(KEY)).map_err(|e| local("file", &path(KEY), e))?;
    let bundle = std::fs::read(path(BUNDLE))
        .map_err(|e| local("file", &path(BUNDLE), e))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| local("file", &path(BUNDLE), e)))?;
    Ok(Some(Stored {
        chain,
        key: Zeroizing::new(key.secret_pkcs8_der().to_vec()),
        bundle,
    }))
}

/// Writes `bytes` to `dir/name` 0600 through a temporary file, synced before the rename.
fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), AgentError> {
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    let target = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| local("file", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| local("file", &tmp, e))?;
    std::fs::rename(&tmp, &target).map_err(|e| local("file", &target, e))
}

/// Stores the SVID (chain and key): the key first, so a crash between the two leaves a
/// chain whose key does not match, which the next start detects and replaces by joining.
pub(crate) fn save_svid(
    dir: &Path,
    chain: &[CertificateDer<'static>],
    key: &[u8],
) -> Result<(), AgentError> {
    let key_pem = Zeroizing::new(pem("PRIVATE KEY", key));
    write(dir, KEY, key_pem.as_bytes())?;
    let chain_pem: String = chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
    write(dir, SVID, chain_pem.as_bytes())
}

/// Stores the bundle document.
pub(crate) fn save_bundle(dir: &Path, bundle: &Value) -> Result<(), AgentError> {
    let bytes = serde_json::to_vec(bundle).map_err(|e| AgentError::Local(e.to_string()))?;
    write(dir, BUNDLE, &bytes)
}
