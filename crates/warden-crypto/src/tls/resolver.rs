//! Certificate selection by SNI over a set of certified keys.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::CertifiedKey;

struct Entry {
    exact: Vec<String>,
    wildcard: Vec<String>,
    key: Arc<CertifiedKey>,
    /// The leaf, for checking names when none are configured.
    leaf: CertificateDer<'static>,
}

/// An immutable set of certificates, each with the SNI names it serves. A
/// [`CertStore`](super::CertStore) swaps whole sets; a handshake reads one set.
#[derive(Default)]
pub struct CertSet {
    entries: Vec<Entry>,
}

impl fmt::Debug for CertSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertSet")
            .field("certs", &self.entries.len())
            .finish()
    }
}

impl CertSet {
    /// A set from certified keys and their configured names (`*.example.com` allowed; an empty
    /// list means the names in the certificate's subjectAltName). The first is the default.
    pub fn new(certs: Vec<(CertifiedKey, Vec<String>)>) -> CertSet {
        let entries = certs
            .into_iter()
            .map(|(ck, names)| {
                let mut exact = Vec::new();
                let mut wildcard = Vec::new();
                for n in names {
                    let n = n.to_ascii_lowercase();
                    match n.strip_prefix('*') {
                        Some(suffix) => wildcard.push(suffix.to_owned()),
                        None => exact.push(n),
                    }
                }
                let leaf = ck.cert[0].clone();
                Entry {
                    exact,
                    wildcard,
                    key: Arc::new(ck),
                    leaf,
                }
            })
            .collect();
        CertSet { entries }
    }

    /// How many certificates the set holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set is empty (a handshake then fails: no certificate).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The leaf certificates, in order.
    pub fn leaves(&self) -> impl Iterator<Item = &CertificateDer<'static>> {
        self.entries.iter().map(|e| &e.leaf)
    }

    /// When the first of the leaf certificates expires (notAfter, Unix seconds); `None` for
    /// an empty set. A leaf that does not parse counts as expired (0): it was loaded, so
    /// rustls took it, and an alert on it is better than silence.
    pub fn earliest_expiry(&self) -> Option<i64> {
        use x509_parser::prelude::FromDer;
        self.entries
            .iter()
            .map(|e| {
                x509_parser::certificate::X509Certificate::from_der(e.leaf.as_ref())
                    .map_or(0, |(_, c)| c.validity().not_after.timestamp())
            })
            .min()
    }

    /// The first certificate (the default, and the client certificate of a client config).
    pub fn first(&self) -> Option<Arc<CertifiedKey>> {
        self.entries.first().map(|e| e.key.clone())
    }

    /// Chooses a certificate for an SNI name: configured exact names, then wildcard names
    /// (one label), then the subjectAltNames of certificates without configured names, then
    /// the first certificate. No SNI (an IP address) gets the first certificate.
    pub fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = sni.map(|s| s.to_ascii_lowercase()) else {
            return self.first();
        };
        if let Some(e) = self.entries.iter().find(|e| e.exact.contains(&name)) {
            return Some(e.key.clone());
        }
        if let Some(e) = self.entries.iter().find(|e| {
            e.wildcard.iter().any(|suffix| {
                name.ends_with(suffix.as_str()) && !name[..name.len() - suffix.len()].contains('.')
            })
        }) {
            return Some(e.key.clone());
        }
        if let Ok(server_name) = ServerName::try_from(name.as_str()) {
            for e in self
                .entries
                .iter()
                .filter(|e| e.exact.is_empty() && e.wildcard.is_empty())
            {
                if let Ok(ee) = webpki::EndEntityCert::try_from(&e.leaf) {
                    if ee.verify_is_valid_for_subject_name(&server_name).is_ok() {
                        return Some(e.key.clone());
                    }
                }
            }
        }
        self.first()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DevCa;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;

    fn cert(ca: &DevCa, names: &[&str]) -> CertifiedKey {
        let issued = ca.server_cert(names).expect("issue");
        let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("chain");
        let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("key");
        crate::tls::certified_key(chain, key).expect("pair")
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_san_then_first() {
        let ca = DevCa::new("sni test ca").expect("ca");
        let set = CertSet::new(vec![
            (cert(&ca, &["a.test"]), vec!["a.test".into()]),
            (cert(&ca, &["b.test"]), vec!["B.test".into()]),
            (cert(&ca, &["*.wild.test"]), vec!["*.wild.test".into()]),
            (cert(&ca, &["san.test", "alt.san.test"]), vec![]),
        ]);
        let leaves: Vec<_> = set.leaves().cloned().collect();
        let which = |sni: Option<&str>| {
            let k = set.pick(sni).expect("a certificate");
            leaves.iter().position(|l| *l == k.cert[0]).expect("known")
        };
        assert_eq!(which(Some("a.test")), 0, "exact name");
        assert_eq!(which(Some("b.test")), 1, "configured names are lower-cased");
        assert_eq!(which(Some("B.TEST")), 1, "SNI is case-insensitive");
        assert_eq!(which(Some("x.wild.test")), 2, "wildcard");
        assert_eq!(
            which(Some("deep.x.wild.test")),
            0,
            "wildcard covers one label"
        );
        assert_eq!(which(Some("san.test")), 3, "SAN of a cert without names");
        assert_eq!(which(Some("alt.san.test")), 3, "second SAN");
        assert_eq!(which(Some("unknown.test")), 0, "unknown name: first");
        assert_eq!(which(None), 0, "no SNI: first");
        assert!(CertSet::default().pick(Some("a.test")).is_none());
    }

    #[test]
    fn earliest_expiry_is_the_first_leafs_not_after() {
        let ca = DevCa::new("expiry test ca").expect("ca");
        let set = CertSet::new(vec![
            (cert(&ca, &["a.test"]), vec![]),
            (cert(&ca, &["b.test"]), vec![]),
        ]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        // DevCa's leaves live 397 days.
        let left = set.earliest_expiry().expect("two leaves") - now;
        assert!(
            (396 * 86_400..=398 * 86_400).contains(&left),
            "{left} s left"
        );
        assert_eq!(CertSet::default().earliest_expiry(), None);
    }
}
