//! Checking many Ed25519 signatures made by one key, exactly as ring checks each of them, in
//! a quarter to a third of ring's time.
//!
//! ring (like RFC 8032's "cofactorless" equation) accepts `(R, s)` on message `M` under key `A`
//! when `s < ℓ` and the canonical encoding of `[s]B - [k]A`, `k = SHA-512(R || A || M) mod ℓ`,
//! is byte for byte `R`. [`PreparedKey`] computes that same point and compares the same bytes;
//! what it saves is the scalar multiplications' doublings: it builds once, for the key, a table
//! of `[d·256^j](-A)` (`d` in 1..=128, `j` in 0..33) and keeps one for the base point, so each
//! product is 33 table additions of the scalar's signed base-256 digits (the same integer, so
//! the same point, whatever small-order part `A` has); and [`PreparedKey::verify_each`] encodes
//! all the points of a batch with one field inversion instead of one each. Building a key's
//! table costs about as much as 20 ring verifications, so it pays for a run of envelopes signed
//! by one key (a batch), not for one signature.
//!
//! Why not batch verification (one random linear combination of all the equations, as
//! `ed25519-dalek`'s `verify_batch`): it is as strict as ring only up to the small-order
//! (torsion) parts of `R` and `A`. A cofactored batch equation accepts every `R` that differs
//! from `[s]B - [k]A` by a point of order 2, 4 or 8, which ring refuses; a cofactorless one
//! accepts such an `R` whenever the random coefficients happen to cancel its torsion (half the
//! time for an order-2 part; dalek derives its coefficients from the batch itself, so a signer
//! can simply retry until they do); and reducing `Σ zᵢkᵢ` mod ℓ for one key is wrong for a key
//! with a small-order part. Closing that gap — every `R` shown torsion-free (a multiplication by
//! ℓ each, or ~128 independent combinations a batch) and weak keys refused — was prototyped for
//! this module: ~12.5 µs a signature, against ~10 µs for this table and ~31 µs for ring on this
//! project's 2-core machine. An agent chooses its own `R`s, and the hub must never store an
//! envelope that `audit verify` and the console (ring) refuse, so every signature here gets
//! ring's exact equation instead, and no key needs refusing for it.
//!
//! Invariants: [`PreparedKey::verify_raw`] accepts exactly what
//! [`PublicKey::verify_raw`](super::PublicKey::verify_raw) accepts (property-tested against
//! ring below, torsion and non-canonical encodings included); a key whose encoding is not the
//! canonical one of a curve point is not prepared (its callers use ring).

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use std::sync::OnceLock;

use super::{CryptoError, PublicKey, Signature};

/// Signed base-256 digits of a scalar below 2^253: 32 bytes and a final carry.
const DIGITS: usize = 33;
/// Table entries per digit position: the multiples 1..=128 (negative digits negate them).
const MULTIPLES: usize = 128;

/// `rows[j][d - 1] = [d · 256^j] P`.
struct Comb {
    rows: Vec<[EdwardsPoint; MULTIPLES]>,
}

impl Comb {
    fn new(point: &EdwardsPoint) -> Comb {
        let mut rows = Vec::with_capacity(DIGITS);
        let mut base = *point;
        for _ in 0..DIGITS {
            let mut row = [base; MULTIPLES];
            for d in 1..MULTIPLES {
                row[d] = row[d - 1] + base;
            }
            rows.push(row);
            // 256 · base: the last multiple (128 · base) doubled.
            base = row[MULTIPLES - 1] + row[MULTIPLES - 1];
        }
        Comb { rows }
    }

    /// `[scalar] P`, the scalar's canonical little-endian bytes read as signed base-256 digits
    /// (each in -128..=127, plus the carry out of the last byte): the same integer, so the
    /// same point, as any other scalar multiplication gives.
    fn mul(&self, scalar: &[u8; 32]) -> EdwardsPoint {
        let mut acc = EdwardsPoint::default();
        let mut carry = 0i16;
        for (j, row) in self.rows.iter().enumerate() {
            let byte = scalar.get(j).copied().unwrap_or(0);
            let mut d = i16::from(byte) + carry;
            carry = 0;
            if d >= 128 {
                d -= 256;
                carry = 1;
            }
            let m = usize::from(d.unsigned_abs());
            if let Some(multiple) = m.checked_sub(1).and_then(|i| row.get(i)) {
                acc = if d > 0 {
                    acc + multiple
                } else {
                    acc - multiple
                };
            }
        }
        acc
    }
}

/// The base point's table, built once per process (about half a millisecond).
fn basepoint() -> &'static Comb {
    static TABLE: OnceLock<Comb> = OnceLock::new();
    TABLE.get_or_init(|| Comb::new(&ED25519_BASEPOINT_POINT))
}

/// A public key with its table of multiples, for checking many signatures it made.
pub struct PreparedKey {
    key: PublicKey,
    /// Multiples of `-A`.
    minus_a: Comb,
}

impl std::fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PreparedKey").field(&self.key).finish()
    }
}

impl PreparedKey {
    /// Builds the key's table; `None` for bytes that are not the canonical encoding of a curve
    /// point (ring decides about those, one signature at a time).
    pub fn new(key: &PublicKey) -> Option<PreparedKey> {
        let a = CompressedEdwardsY(key.0).decompress()?;
        if a.compress().0 != key.0 {
            return None;
        }
        Some(PreparedKey {
            key: *key,
            minus_a: Comb::new(&-a),
        })
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }

    /// Verifies a signature over bytes that already start with their domain tag: ring's
    /// equation, see the module documentation.
    pub fn verify_raw(&self, tagged_message: &[u8], sig: &Signature) -> Result<(), CryptoError> {
        let check = self.expected_r(tagged_message, sig)?;
        if check.compress().0 == sig.0[..32] {
            Ok(())
        } else {
            Err(CryptoError::BadSignature)
        }
    }

    /// Verifies each (tagged message, signature) pair as [`PreparedKey::verify_raw`] does and
    /// tells, in order, whether it verifies; the expected `R`s are encoded together.
    pub fn verify_each(&self, items: &[(&[u8], &Signature)]) -> Vec<bool> {
        let checks: Vec<Option<EdwardsPoint>> = items
            .iter()
            .map(|(message, sig)| self.expected_r(message, sig).ok())
            .collect();
        let points: Vec<EdwardsPoint> = checks.iter().flatten().copied().collect();
        let mut encoded = EdwardsPoint::compress_batch_alloc(&points).into_iter();
        items
            .iter()
            .zip(&checks)
            .map(|((_, sig), check)| match check {
                Some(_) => encoded.next().is_some_and(|r| r.0 == sig.0[..32]),
                None => false,
            })
            .collect()
    }

    /// `[s]B - [k]A` for the signature's `s` and `k = SHA-512(R || A || message) mod ℓ`: what
    /// `R` must encode; an `s` that is not below `ℓ` is refused.
    fn expected_r(
        &self,
        tagged_message: &[u8],
        sig: &Signature,
    ) -> Result<EdwardsPoint, CryptoError> {
        let (r, s) = sig.0.split_at(32);
        let s: [u8; 32] = s.try_into().map_err(|_| CryptoError::BadSignature)?;
        let s: Option<Scalar> = Scalar::from_canonical_bytes(s).into();
        let s = s.ok_or(CryptoError::BadSignature)?;
        let mut h = ring::digest::Context::new(&ring::digest::SHA512);
        h.update(r);
        h.update(&self.key.0);
        h.update(tagged_message);
        let wide: [u8; 64] = h
            .finish()
            .as_ref()
            .try_into()
            .map_err(|_| CryptoError::BadSignature)?;
        let k = Scalar::from_bytes_mod_order_wide(&wide);
        Ok(basepoint().mul(s.as_bytes()) + self.minus_a.mul(k.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyPair;
    use curve25519_dalek::constants::EIGHT_TORSION;
    use proptest::prelude::*;

    /// ℓ, the order of the base point, little-endian.
    const ELL: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    /// What ring says, and what a prepared key says (one at a time and among others, which
    /// must agree), if the key can be prepared.
    fn both(key: &PublicKey, msg: &[u8], sig: &Signature) -> (bool, Option<bool>) {
        let ring = key.verify_raw(msg, sig).is_ok();
        let prepared = PreparedKey::new(key).map(|p| {
            let alone = p.verify_raw(msg, sig).is_ok();
            let other = Signature([7; 64]);
            let among = p.verify_each(&[(b"x", &other), (msg, sig), (b"y", &other)]);
            assert_eq!(among, [false, alone, false]);
            alone
        });
        (ring, prepared)
    }

    fn agree(key: &PublicKey, msg: &[u8], sig: &Signature) -> bool {
        let (ring, prepared) = both(key, msg, sig);
        prepared.is_none_or(|p| p == ring)
    }

    /// A signature by secret scalar `a` (key `[a]B + ta`, nonce `[r]B + tr`), made by hand so
    /// that keys and nonces can carry small-order parts.
    fn forge(
        a: &Scalar,
        ta: &EdwardsPoint,
        r: &Scalar,
        tr: &EdwardsPoint,
        msg: &[u8],
    ) -> (PublicKey, Signature) {
        let big_a = EdwardsPoint::mul_base(a) + ta;
        let big_r = EdwardsPoint::mul_base(r) + tr;
        let key = PublicKey(big_a.compress().0);
        let r_bytes = big_r.compress().0;
        let mut h = ring::digest::Context::new(&ring::digest::SHA512);
        h.update(&r_bytes);
        h.update(&key.0);
        h.update(msg);
        let wide: [u8; 64] = h.finish().as_ref().try_into().unwrap();
        let k = Scalar::from_bytes_mod_order_wide(&wide);
        let s = r + k * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r_bytes);
        sig[32..].copy_from_slice(s.as_bytes());
        (key, Signature(sig))
    }

    #[test]
    fn good_signatures_verify_and_tampering_is_refused() {
        let key = KeyPair::from_seed(&[3; 32]).unwrap();
        let prepared = PreparedKey::new(&key.public_key()).unwrap();
        for n in 0..50u32 {
            let msg = format!("tongbu/v1/envelope\n{n} {}", "x".repeat(n as usize * 7));
            let sig = key.sign_raw(msg.as_bytes());
            assert_eq!(prepared.verify_raw(msg.as_bytes(), &sig), Ok(()));
            assert!(prepared.verify_raw(b"other", &sig).is_err());
            let mut bad = sig;
            bad.0[(n as usize) % 64] ^= 1 << (n % 8);
            assert!(prepared.verify_raw(msg.as_bytes(), &bad).is_err());
        }
        let other = KeyPair::from_seed(&[4; 32]).unwrap();
        assert!(prepared.verify_raw(b"m", &other.sign_raw(b"m")).is_err());
    }

    #[test]
    fn many_signatures_are_checked_at_once() {
        let key = KeyPair::from_seed(&[6; 32]).unwrap();
        let prepared = PreparedKey::new(&key.public_key()).unwrap();
        let messages: Vec<Vec<u8>> = (0..40u8).map(|n| vec![n; usize::from(n) * 9]).collect();
        let mut sigs: Vec<Signature> = messages.iter().map(|m| key.sign_raw(m)).collect();
        sigs[3].0[40] ^= 2; // s changed
        sigs[17].0[0] ^= 1; // R changed
        sigs[31].0[63] |= 0xf0; // s not below ℓ
        let items: Vec<(&[u8], &Signature)> = messages
            .iter()
            .zip(&sigs)
            .map(|(m, s)| (m.as_slice(), s))
            .collect();
        let each = prepared.verify_each(&items);
        let ring: Vec<bool> = items
            .iter()
            .map(|(m, s)| key.public_key().verify_raw(m, s).is_ok())
            .collect();
        assert_eq!(each, ring);
        assert_eq!(each.iter().filter(|ok| !**ok).count(), 3);
        assert!(prepared.verify_each(&[]).is_empty());
    }

    #[test]
    fn a_non_canonical_s_is_refused_like_ring() {
        let key = KeyPair::from_seed(&[5; 32]).unwrap();
        let sig = key.sign_raw(b"msg");
        // s + ℓ: the same residue, not the canonical encoding.
        let mut s = [0u8; 32];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(sig.0[32 + i]) + u16::from(ELL[i]) + carry;
            s[i] = v as u8;
            carry = v >> 8;
        }
        let mut bad = sig;
        bad.0[32..].copy_from_slice(&s);
        assert_eq!(both(&key.public_key(), b"msg", &bad), (false, Some(false)));
    }

    #[test]
    fn a_nonce_with_a_small_order_part_is_refused_like_ring() {
        // What a cofactored batch equation would accept: R = [r]B + T, T of order 2, 4 or 8.
        let a = Scalar::from(77u64);
        let r = Scalar::from(1234567u64);
        for t in &EIGHT_TORSION {
            let (key, sig) = forge(&a, &EdwardsPoint::default(), &r, t, b"m");
            let (ring, prepared) = both(&key, b"m", &sig);
            assert_eq!(Some(ring), prepared, "{t:?}");
            assert_eq!(ring, t == &EdwardsPoint::default());
        }
    }

    #[test]
    fn keys_that_are_not_canonical_are_left_to_ring() {
        // y = p (non-canonical 0) and y = 1 with the sign bit set ("negative zero").
        let mut y_is_p = [0xffu8; 32];
        y_is_p[0] = 0xed;
        y_is_p[31] = 0x7f;
        let mut neg_zero = [0u8; 32];
        neg_zero[0] = 1;
        neg_zero[31] = 0x80;
        for bytes in [y_is_p, neg_zero] {
            assert!(PreparedKey::new(&PublicKey(bytes)).is_none());
        }
        // Small-order and mixed-order keys that are canonical are prepared, and agree.
        for t in &EIGHT_TORSION {
            let (key, sig) = forge(
                &Scalar::from(99u64),
                t,
                &Scalar::from(5u64),
                &EdwardsPoint::default(),
                b"m",
            );
            assert!(agree(&key, b"m", &sig), "{t:?}");
            assert!(agree(&PublicKey(t.compress().0), b"m", &sig), "{t:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn accepts_exactly_what_ring_accepts(
            a in any::<[u8; 32]>(),
            r in any::<[u8; 32]>(),
            ta in 0usize..8,
            tr in 0usize..8,
            msg in proptest::collection::vec(any::<u8>(), 0..300),
            flip in proptest::option::of((0usize..64, 0u8..8)),
        ) {
            let (key, mut sig) = forge(
                &Scalar::from_bytes_mod_order(a),
                &EIGHT_TORSION[ta],
                &Scalar::from_bytes_mod_order(r),
                &EIGHT_TORSION[tr],
                &msg,
            );
            if let Some((byte, bit)) = flip {
                sig.0[byte] ^= 1 << bit;
            }
            let (ring, prepared) = both(&key, &msg, &sig);
            prop_assert!(prepared.is_none_or(|p| p == ring), "ring {ring}, prepared {prepared:?}");
        }

        #[test]
        fn random_bytes_are_judged_like_ring(
            key in any::<[u8; 32]>(),
            sig in proptest::collection::vec(any::<u8>(), 64),
            msg in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let sig = Signature::from_slice(&sig).unwrap();
            prop_assert!(agree(&PublicKey(key), &msg, &sig));
        }
    }
}
