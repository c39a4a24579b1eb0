//! The CA end to end without sockets: a workload's CSR in, an X.509-SVID out, every field of
//! it read back with x509-parser, and the refusals a workload sees for a CSR asking too much.

use rcgen::{CertificateParams, IsCa, KeyPair, SanType};
use rustls_pki_types::CertificateDer;
use warden_identity::bundle::Bundle;
use warden_identity::csr::{self, CsrError};
use warden_identity::svid::{self, SvidError};
use warden_identity::{CaKey, KeyKind, Signer, SpiffeId, TrustDomain};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

const NOW: i64 = 1_800_000_000;
const HOUR: i64 = 3600;

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn ca() -> (CaKey, Signer) {
    let root = CaKey::new_root(&td(), NOW, 365 * 24 * HOUR).unwrap();
    let inter = root.new_intermediate(&td(), NOW, 7 * 24 * HOUR).unwrap();
    let signer = Signer::new(td(), inter, Vec::new()).unwrap();
    (root, signer)
}

fn csr_der(alg: &'static rcgen::SignatureAlgorithm, sans: &[SanType], is_ca: bool) -> Vec<u8> {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = sans.to_vec();
    if is_ca {
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    p.serialize_request(&key).unwrap().der().to_vec()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

fn web() -> SpiffeId {
    SpiffeId::parse("spiffe://example.org/ns/prod/sa/web").unwrap()
}

#[test]
fn an_issued_x509_svid_has_every_field_the_spiffe_standard_asks_for() {
    let (root, signer) = ca();
    let der = csr_der(
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &[uri(web().as_str())],
        false,
    );
    let checked = csr::check(&der, &web()).unwrap();
    assert_eq!(checked.key, KeyKind::EcdsaP256);
    let svid = signer.issue(&checked, &web(), NOW, HOUR).unwrap();
    assert_eq!(svid.chain.len(), 2, "leaf and the signing intermediate");
    assert_eq!(svid.chain[1], signer.key().cert_der());
    assert_eq!(svid.not_after - NOW, HOUR);

    let (_, leaf) = X509Certificate::from_der(&svid.chain[0]).unwrap();
    assert_eq!(leaf.version().0, 2, "X.509 v3");
    // Exactly one URI SAN, the SPIFFE ID; nothing else.
    let san = leaf.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(san.general_names, vec![GeneralName::URI(web().as_str())]);
    let bc = leaf.basic_constraints().unwrap().expect("basicConstraints");
    assert!(!bc.value.ca, "cA=false");
    let ku = leaf.key_usage().unwrap().expect("keyUsage");
    assert!(ku.critical);
    assert!(ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());
    let eku = leaf
        .extended_key_usage()
        .unwrap()
        .expect("extendedKeyUsage");
    assert!(eku.value.server_auth && eku.value.client_auth);
    assert!(!eku.value.any && !eku.value.code_signing);
    // Authority key identifier = the intermediate's subject key identifier.
    let (_, inter) = X509Certificate::from_der(&svid.chain[1]).unwrap();
    let ski = inter
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .expect("intermediate has an SKI");
    let aki = leaf
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .expect("leaf has an AKI");
    assert_eq!(aki, ski);
    assert_eq!(leaf.issuer(), inter.subject());
    // Validity: backdated a little for skew, one hour from issuance.
    assert_eq!(leaf.validity().not_before.timestamp(), NOW - 10);
    assert_eq!(leaf.validity().not_after.timestamp(), NOW + HOUR);
    // A random, positive serial of 16 bytes, reported as hex.
    assert_eq!(leaf.raw_serial().len(), 16);
    assert!(leaf.raw_serial()[0] < 0x80);
    assert_eq!(svid.serial.len(), 32);
    // The workload's key, not one the CA made.
    assert_eq!(leaf.public_key().raw, checked.spki_der.as_slice());
    // The intermediate is a CA that may not certify further CAs.
    let ibc = inter.basic_constraints().unwrap().unwrap().value;
    assert!(ibc.ca);
    assert_eq!(ibc.path_len_constraint, Some(0));

    // It verifies against the root, as a client and as a server certificate.
    let chain: Vec<_> = svid
        .chain
        .iter()
        .map(|d| CertificateDer::from(d.clone()))
        .collect();
    let roots = [CertificateDer::from(root.cert_der().to_vec())];
    assert_eq!(
        svid::verify(&chain, &td(), &roots, NOW + 60, true).unwrap(),
        web()
    );
    assert_eq!(
        svid::verify(&chain, &td(), &roots, NOW + 60, false).unwrap(),
        web()
    );
}

#[test]
fn a_csr_without_a_san_gets_the_registered_id_and_ed25519_keys_are_accepted() {
    let (_, signer) = ca();
    let der = csr_der(&rcgen::PKCS_ED25519, &[], false);
    let checked = csr::check(&der, &web()).unwrap();
    assert_eq!(checked.key, KeyKind::Ed25519);
    let svid = signer.issue(&checked, &web(), NOW, HOUR).unwrap();
    assert_eq!(svid::leaf_id(&svid.chain[0]).unwrap(), web());
}

#[test]
fn csrs_asking_for_more_than_the_registration_are_refused_with_the_reason() {
    let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;
    let two = csr_der(
        p256,
        &[uri(web().as_str()), uri("spiffe://example.org/admin")],
        false,
    );
    assert_eq!(
        csr::check(&two, &web()).unwrap_err(),
        CsrError::TooManySans(2)
    );
    let dns = csr_der(
        p256,
        &[SanType::DnsName("web.example.org".try_into().unwrap())],
        false,
    );
    assert_eq!(
        csr::check(&dns, &web()).unwrap_err(),
        CsrError::NotUri("DNS")
    );
    let other_td = csr_der(p256, &[uri("spiffe://evil.org/ns/prod/sa/web")], false);
    assert!(matches!(
        csr::check(&other_td, &web()).unwrap_err(),
        CsrError::WrongTrustDomain { .. }
    ));
    let other_id = csr_der(p256, &[uri("spiffe://example.org/admin")], false);
    let e = csr::check(&other_id, &web()).unwrap_err();
    assert!(matches!(e, CsrError::WrongId { .. }));
    assert!(e
        .to_string()
        .contains("registered as spiffe://example.org/ns/prod/sa/web"));
    let not_spiffe = csr_der(p256, &[uri("https://example.org/web")], false);
    assert!(matches!(
        csr::check(&not_spiffe, &web()).unwrap_err(),
        CsrError::NotSpiffeId(..)
    ));
    let ca_flag = csr_der(p256, &[uri(web().as_str())], true);
    assert_eq!(csr::check(&ca_flag, &web()).unwrap_err(), CsrError::IsCa);
    let p384 = csr_der(&rcgen::PKCS_ECDSA_P384_SHA384, &[], false);
    assert!(matches!(
        csr::check(&p384, &web()).unwrap_err(),
        CsrError::KeyType(k) if k.contains("1.3.132.0.34")
    ));
    // A signature that does not verify: the requester does not hold the key.
    let mut forged = csr_der(p256, &[uri(web().as_str())], false);
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    assert_eq!(
        csr::check(&forged, &web()).unwrap_err(),
        CsrError::BadSignature
    );
    assert_eq!(
        csr::check(b"not a csr", &web()).unwrap_err(),
        CsrError::Malformed
    );
    assert_eq!(
        csr::check(&vec![0x30; csr::MAX_CSR_LEN + 1], &web()).unwrap_err(),
        CsrError::TooLarge
    );
}

#[test]
fn a_peer_svid_is_refused_when_expired_from_another_ca_or_another_trust_domain() {
    let (root, signer) = ca();
    let der = csr_der(&rcgen::PKCS_ECDSA_P256_SHA256, &[], false);
    let svid = signer
        .issue(&csr::check(&der, &web()).unwrap(), &web(), NOW, HOUR)
        .unwrap();
    let chain: Vec<_> = svid
        .chain
        .iter()
        .map(|d| CertificateDer::from(d.clone()))
        .collect();
    let roots = [CertificateDer::from(root.cert_der().to_vec())];
    // Expired.
    assert!(matches!(
        svid::verify(&chain, &td(), &roots, NOW + HOUR + 1, true).unwrap_err(),
        SvidError::Chain(e) if e.contains("Expired")
    ));
    // Another CA of the same trust domain name.
    let (other_root, _) = ca();
    let other = [CertificateDer::from(other_root.cert_der().to_vec())];
    assert!(matches!(
        svid::verify(&chain, &td(), &other, NOW + 60, true).unwrap_err(),
        SvidError::Chain(_)
    ));
    // The right CA, but verifying for another trust domain.
    let td2 = TrustDomain::new("other.org").unwrap();
    assert!(matches!(
        svid::verify(&chain, &td2, &roots, NOW + 60, true).unwrap_err(),
        SvidError::WrongTrustDomain(..)
    ));
    // A CA certificate presented as a leaf.
    let ca_leaf = [CertificateDer::from(signer.key().cert_der().to_vec())];
    assert_eq!(
        svid::verify(&ca_leaf, &td(), &roots, NOW + 60, true).unwrap_err(),
        SvidError::LeafIsCa
    );
    assert_eq!(
        svid::verify(&[], &td(), &roots, NOW, true).unwrap_err(),
        SvidError::Empty
    );
    // The signer refuses IDs outside its trust domain and signing past its own validity.
    let evil = SpiffeId::parse("spiffe://evil.org/web").unwrap();
    let checked = csr::check(&der, &web()).unwrap();
    assert!(signer.issue(&checked, &evil, NOW, HOUR).is_err());
    assert!(signer
        .issue(&checked, &web(), NOW + 8 * 24 * HOUR, HOUR)
        .is_err());
    // An SVID never outlives its intermediate.
    let late = signer
        .issue(&checked, &web(), NOW + 7 * 24 * HOUR - 60, HOUR)
        .unwrap();
    assert_eq!(late.not_after, signer.key().not_after());
}

#[test]
fn ca_keys_load_back_from_their_parts_and_mismatches_are_refused() {
    let (root, signer) = ca();
    let again = CaKey::from_parts(root.cert_der().to_vec(), root.key_pkcs8().to_vec()).unwrap();
    assert_eq!(again.not_after(), root.not_after());
    // The intermediate's certificate with the root's key.
    let e =
        CaKey::from_parts(signer.key().cert_der().to_vec(), root.key_pkcs8().to_vec()).unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
    // A leaf is not a CA.
    let der = csr_der(&rcgen::PKCS_ECDSA_P256_SHA256, &[], false);
    let svid = signer
        .issue(&csr::check(&der, &web()).unwrap(), &web(), NOW, HOUR)
        .unwrap();
    assert!(matches!(
        CaKey::from_parts(svid.chain[0].clone(), root.key_pkcs8().to_vec()).unwrap_err(),
        warden_identity::CaError::NotCa
    ));
}

#[test]
fn the_bundle_is_a_spiffe_jwk_set_and_parses_back() {
    let (root, _) = ca();
    let (next_root, _) = ca();
    let jwt = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "k1", "x": "AA", "y": "AA"});
    let bundle = Bundle {
        trust_domain: td(),
        x509_authorities: vec![root.cert_der().to_vec(), next_root.cert_der().to_vec()],
        jwt_authorities: vec![jwt],
        sequence: 7,
        refresh_hint: Some(300),
    };
    let doc = bundle.to_json().unwrap();
    assert_eq!(doc["spiffe_sequence"], 7);
    assert_eq!(doc["spiffe_refresh_hint"], 300);
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(keys[0]["use"], "x509-svid");
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[0]["crv"], "P-256");
    assert_eq!(keys[0]["x5c"].as_array().unwrap().len(), 1);
    assert_eq!(keys[2]["use"], "jwt-svid");
    assert_eq!(keys[2]["kid"], "k1");
    let back = Bundle::parse(td(), serde_json::to_vec(&doc).unwrap().as_slice()).unwrap();
    assert_eq!(
        back,
        Bundle {
            jwt_authorities: vec![keys[2].clone()],
            ..bundle
        }
    );
    // Refusals.
    let no_x5c = br#"{"keys":[{"use":"x509-svid","kty":"EC"}]}"#;
    assert!(Bundle::parse(td(), no_x5c).is_err());
    let no_kid = br#"{"keys":[{"use":"jwt-svid","kty":"EC"}]}"#;
    assert!(Bundle::parse(td(), no_kid).is_err());
    assert!(Bundle::parse(td(), b"[]").is_err());
    // Unknown uses are ignored.
    let other = br#"{"keys":[{"use":"sig","kty":"EC"}],"spiffe_sequence":2}"#;
    let b = Bundle::parse(td(), other).unwrap();
    assert!(b.x509_authorities.is_empty() && b.jwt_authorities.is_empty());
    assert_eq!(b.sequence, 2);
}
