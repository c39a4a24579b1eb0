//! Shamir's secret sharing over GF(2^8), for splitting the root key into unseal key shares.
//!
//! Each byte of the secret is the constant term of its own random polynomial of degree
//! `threshold - 1`; share `i` holds every polynomial evaluated at `x = i` (1..=255). The
//! share format is Vault's: the `y` bytes followed by the one-byte `x`, so a 32-byte key gives
//! 33-byte shares. Any `threshold` shares recover the secret by Lagrange interpolation at 0;
//! fewer reveal nothing about it (every secret is equally likely).
//!
//! The field is GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1. Multiplication is a
//! branch-free shift-and-add rather than log/exp tables, so its timing does not depend on the
//! secret bytes; inversion is `a^254`. The cost is irrelevant at these sizes (a few thousand
//! multiplications per unseal). Own code rather than a crate: it is ~150 lines, and the crates
//! that exist are unmaintained or pull in a different randomness stack.

use rand::RngCore;
use zeroize::Zeroizing;

/// Most shares (the `x` coordinate is one non-zero byte).
pub const MAX_SHARES: u8 = 255;

/// Why splitting or combining failed. Messages never include share bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShamirError {
    /// `shares`/`threshold` out of range.
    #[error("{0}")]
    Parameters(String),
    /// The shares given cannot be combined.
    #[error("{0}")]
    Shares(String),
}

/// Multiplies in GF(2^8) (AES polynomial), without secret-dependent branches.
fn mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    for _ in 0..8 {
        p ^= a & 0u8.wrapping_sub(b & 1);
        let carry = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1b & carry);
        b >>= 1;
    }
    p
}

/// The multiplicative inverse (`a^254`); 0 for 0, which callers never pass.
fn inv(a: u8) -> u8 {
    let mut result = 1u8;
    let mut base = a;
    let mut e = 254u8;
    while e > 0 {
        if e & 1 == 1 {
            result = mul(result, base);
        }
        base = mul(base, base);
        e >>= 1;
    }
    result
}

/// Splits `secret` into `shares` shares, any `threshold` of which recover it.
/// `1 <= threshold <= shares <= 255`, and `threshold >= 2` when `shares > 1` (one share
/// that alone unseals would make the others pointless copies).
pub fn split(
    secret: &[u8],
    shares: u8,
    threshold: u8,
    rng: &mut impl RngCore,
) -> Result<Vec<Zeroizing<Vec<u8>>>, ShamirError> {
    if secret.is_empty() {
        return Err(ShamirError::Parameters("the secret is empty".into()));
    }
    if shares == 0 || threshold == 0 || threshold > shares {
        return Err(ShamirError::Parameters(format!(
            "need 1 <= secret_threshold <= secret_shares <= {MAX_SHARES}, got threshold \
             {threshold} of {shares}"
        )));
    }
    if shares > 1 && threshold < 2 {
        return Err(ShamirError::Parameters(
            "secret_threshold must be at least 2 when secret_shares is more than 1".into(),
        ));
    }
    let t = usize::from(threshold);
    let mut out: Vec<Zeroizing<Vec<u8>>> = (1..=shares)
        .map(|x| {
            let mut s = Zeroizing::new(vec![0u8; secret.len() + 1]);
            s[secret.len()] = x;
            s
        })
        .collect();
    // coefficients[0] is the secret byte; the rest are random.
    let mut coefficients = Zeroizing::new(vec![0u8; t]);
    for (i, &byte) in secret.iter().enumerate() {
        coefficients[0] = byte;
        rng.fill_bytes(&mut coefficients[1..]);
        for share in out.iter_mut() {
            let x = share[secret.len()];
            // Horner: ((c[t-1] x + c[t-2]) x + ...) x + c[0].
            let mut y = 0u8;
            for &c in coefficients.iter().rev() {
                y = mul(y, x) ^ c;
            }
            share[i] = y;
        }
    }
    Ok(out)
}

/// Recovers the secret from shares made by [`split`]. Refuses fewer than one share, shares of
/// different lengths, shorter than 2 bytes, with `x = 0`, or with a repeated `x`. Given fewer
/// than the threshold (or shares of different splits) it returns a wrong secret, which the
/// caller detects by checking it (the root key must open the keyring).
pub fn combine(shares: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>, ShamirError> {
    let first = shares
        .first()
        .ok_or_else(|| ShamirError::Shares("no key shares given".into()))?;
    let len = first.len();
    if len < 2 {
        return Err(ShamirError::Shares("a key share is too short".into()));
    }
    if shares.len() > usize::from(MAX_SHARES) {
        return Err(ShamirError::Shares("too many key shares".into()));
    }
    let mut xs = Vec::with_capacity(shares.len());
    for s in shares {
        if s.len() != len {
            return Err(ShamirError::Shares(
                "the key shares have different lengths".into(),
            ));
        }
        let x = s[len - 1];
        if x == 0 {
            return Err(ShamirError::Shares("a key share is malformed".into()));
        }
        if xs.contains(&x) {
            return Err(ShamirError::Shares(
                "the same key share was given twice".into(),
            ));
        }
        xs.push(x);
    }
    // Lagrange basis at 0: l_j = prod_{m != j} x_m / (x_m - x_j); subtraction is XOR.
    let basis: Vec<u8> = (0..xs.len())
        .map(|j| {
            let (mut num, mut den) = (1u8, 1u8);
            for (m, &xm) in xs.iter().enumerate() {
                if m != j {
                    num = mul(num, xm);
                    den = mul(den, xm ^ xs[j]);
                }
            }
            mul(num, inv(den))
        })
        .collect();
    let mut secret = Zeroizing::new(vec![0u8; len - 1]);
    for (i, out) in secret.iter_mut().enumerate() {
        for (s, &l) in shares.iter().zip(&basis) {
            *out ^= mul(s[i], l);
        }
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn field_arithmetic_matches_known_values() {
        // FIPS-197 §4.2: {57} x {83} = {c1}.
        assert_eq!(mul(0x57, 0x83), 0xc1);
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
            assert_eq!(mul(a, 1), a);
            assert_eq!(mul(a, 0), 0);
        }
    }

    #[test]
    fn any_threshold_of_the_shares_recover_and_fewer_do_not() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        for _ in 0..300 {
            let n: u8 = rng.random_range(2..=12);
            let t: u8 = rng.random_range(2..=n);
            let mut secret = vec![0u8; 32];
            rng.fill_bytes(&mut secret);
            let shares = split(&secret, n, t, &mut rng).unwrap();
            assert_eq!(shares.len(), usize::from(n));
            assert!(shares.iter().all(|s| s.len() == 33));

            let mut picked: Vec<&[u8]> = shares.iter().map(|s| &s[..]).collect();
            picked.shuffle(&mut rng);
            let k = rng.random_range(usize::from(t)..=usize::from(n));
            assert_eq!(
                &combine(&picked[..k]).unwrap()[..],
                &secret[..],
                "{k} of {n}, t={t}"
            );
            // t - 1 shares give some other value (the chance of a match is 2^-256).
            let fewer = combine(&picked[..usize::from(t) - 1]).unwrap();
            assert_ne!(&fewer[..], &secret[..], "t-1 = {} of {n}", t - 1);
        }
    }

    #[test]
    fn fewer_than_threshold_leak_nothing_about_a_byte() {
        // With t = 3, two shares of a 1-byte secret are consistent with every secret: for
        // fixed shares 1 and 2, each of the 256 secrets occurs equally often over the random
        // coefficients. Check the distribution of share 1's byte for two different secrets.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = [[0u32; 256]; 2];
        for (k, secret) in [0u8, 0xff].iter().enumerate() {
            for _ in 0..25_600 {
                let s = split(&[*secret], 3, 3, &mut rng).unwrap();
                counts[k][usize::from(s[0][0])] += 1;
            }
        }
        for c in counts {
            assert!(c.iter().all(|&n| (40..=180).contains(&n)), "{c:?}");
        }
    }

    #[test]
    fn one_of_one_is_the_secret_with_its_x() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let s = split(b"key", 1, 1, &mut rng).unwrap();
        assert_eq!(&s[0][..], b"key\x01");
        assert_eq!(&combine(&[&s[0][..]]).unwrap()[..], b"key");
    }

    #[test]
    fn bad_parameters_and_malformed_shares_are_refused() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        for (n, t) in [(0, 0), (3, 0), (3, 4), (5, 1)] {
            assert!(matches!(
                split(&[1; 32], n, t, &mut rng),
                Err(ShamirError::Parameters(_))
            ));
        }
        assert!(split(&[], 3, 2, &mut rng).is_err());
        let s = split(&[9; 32], 5, 3, &mut rng).unwrap();
        assert!(combine(&[]).is_err());
        assert!(
            combine(&[&s[0][..], &s[0][..], &s[1][..]]).is_err(),
            "duplicate"
        );
        assert!(combine(&[&s[0][..], &s[1][..31]]).is_err(), "length");
        assert!(combine(&[&[1u8][..]]).is_err(), "too short");
        let mut zero_x = s[2].to_vec();
        zero_x[32] = 0;
        assert!(
            combine(&[&s[0][..], &s[1][..], &zero_x[..]]).is_err(),
            "x = 0"
        );
    }
}
