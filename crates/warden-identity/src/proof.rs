//! What a workload signs with its current SVID's key to prove itself to the CA: the bytes
//! are fixed here, for the agent that signs and the authority that checks.

/// Context of a renewal proof, before the new CSR's DER.
pub const RENEW_CONTEXT: &[u8] = b"warden-ca-renew-v1\0";

/// Context of a JWT-SVID request proof.
pub const JWT_SVID_CONTEXT: &[u8] = b"warden-jwt-svid-v1\0";

/// How far a JWT-SVID request's `iat` may be from the authority's clock, seconds.
pub const JWT_SVID_REQUEST_SKEW: i64 = 60;

/// The bytes a renewal proof signs.
pub fn renew_message(csr_der: &[u8]) -> Vec<u8> {
    let mut m = RENEW_CONTEXT.to_vec();
    m.extend_from_slice(csr_der);
    m
}

/// The bytes a JWT-SVID request proof signs: the context, `iat`, then each audience, one per
/// line (audiences may not contain a newline).
pub fn jwt_svid_message(iat: i64, audience: &[String]) -> Vec<u8> {
    let mut m = JWT_SVID_CONTEXT.to_vec();
    m.extend_from_slice(iat.to_string().as_bytes());
    for a in audience {
        m.push(b'\n');
        m.extend_from_slice(a.as_bytes());
    }
    m
}
