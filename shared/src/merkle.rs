//! RFC 9162 Merkle trees over SHA-256 (Certificate Transparency v2; the same tree as RFC 6962):
//! tree heads, inclusion and consistency proofs, their verification, and the [`Frontier`] that
//! appends one leaf in O(log n). The hub keeps its append-only log of envelopes with it; the
//! agent checks the hub's proofs with it. Pure: no I/O.
//!
//! Hashes: a leaf is SHA-256(0x00 || data), an inner node SHA-256(0x01 || left || right), and
//! the root of the empty tree SHA-256(""). A tree of n > 1 leaves splits at k, the largest
//! power of two below n: MTH(D[n]) = node(MTH(D[0:k]), MTH(D[k:n])).
//!
//! Storage model: the only hashes ever stored or looked up are those of *perfect, aligned*
//! subtrees, named `(level, index)` for the leaves `[index << level, (index + 1) << level)`.
//! Such a node is complete when its last leaf is appended and never changes afterwards, so a
//! store writes each one once ([`Frontier::push`] returns exactly the nodes an append
//! completes) and never updates it. Every other hash (a root, a proof's sibling on the right
//! edge) is combined from the perfect subtrees along the binary decomposition of its width.
//!
//! Invariants:
//! - every range `D[a:b]` the RFC recursion visits starts at a multiple of the smallest power
//!   of two ≥ `b - a`, so the pieces of its binary decomposition are aligned perfect subtrees;
//! - a root reads at most 64 stored nodes, a proof at most 129: only the first sibling taken
//!   off the right edge is not itself a perfect subtree. Nothing recurses, so any `u64` size
//!   is safe;
//! - the verify functions never panic or overflow, whatever the sizes and the proof; they
//!   check the proof's length first, so the error says what is wrong.
//!
//! [`Hash`] is a bare `[u8; 32]`, the bytes of a [`Digest`]: convert with `Digest(hash)` and
//! `digest.0`; for hex, `Digest(hash).to_hex()` and `Digest::from_hex(s)?.0`.

use crate::crypto::Digest;

/// A SHA-256 hash in the tree.
pub type Hash = [u8; 32];

/// Domain separation between leaves and inner nodes (RFC 9162 §2.1.1).
const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// The hash of a leaf whose data is `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    Digest::of(&[&[LEAF_PREFIX], data]).0
}

/// The hash of an inner node over its two children.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Digest::of(&[&[NODE_PREFIX], left, right]).0
}

/// The root of the tree with no leaves.
pub fn empty_root() -> Hash {
    Digest::of(&[]).0
}

/// Where the hashes of *perfect, aligned* subtrees come from: `subtree(level, index)` is the
/// hash of leaves `[index << level, (index + 1) << level)` (level 0 = leaf hashes). The hub
/// backs it with a SQLite table, tests with a `Vec`. The functions here only ask for subtrees
/// that lie wholly inside the tree size they were given.
pub trait SubtreeSource {
    type Error;
    fn subtree(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// Why a proof cannot be built or does not verify. Every case means: reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is outside a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    /// A consistency proof needs `old <= new` (and `old >= 1` to build one).
    #[error("there is no consistency proof from a tree of {old} leaves to one of {new} leaves")]
    BadSizes { old: u64, new: u64 },
    #[error("the proof has {got} hashes where {expected} are needed")]
    WrongLength { expected: usize, got: usize },
    /// The proof does not reproduce the (new) root: the leaf is not in that tree, or the new
    /// tree does not extend the old one.
    #[error("the proof does not reproduce the expected root")]
    RootMismatch,
    /// A consistency proof does not reproduce the old root: it is a proof about another tree.
    #[error("the proof does not reproduce the old tree's root")]
    OldRootMismatch,
    /// Two trees of the same size with different roots: two histories.
    #[error("two trees of {size} leaves have different roots")]
    DifferentRoots { size: u64 },
}

/// Errors from building proofs: either the request is impossible, or the source failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError<E> {
    #[error(transparent)]
    Proof(#[from] ProofError),
    #[error(transparent)]
    Source(E),
}

/// MTH(D[n]) for the tree of the first `size` leaves (the empty root for 0).
pub fn root<S: SubtreeSource>(src: &S, size: u64) -> Result<Hash, BuildError<S::Error>> {
    range_hash(src, 0, size)
}

/// RFC 9162 §2.1.3.1 PATH(m, D[n]): the inclusion proof of leaf `index` in the tree of `size`
/// leaves, the leaf's sibling first and the root's child last.
pub fn inclusion_proof<S: SubtreeSource>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, BuildError<S::Error>> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size }.into());
    }
    // Walk down from the root, collecting each sibling; the proof lists them bottom-up.
    let mut path = Vec::with_capacity(inclusion_len(index, size));
    let (mut lo, mut hi) = (0, size);
    while hi - lo > 1 {
        let k = split(hi - lo);
        let mid = lo + k;
        if index < mid {
            path.push(range_hash(src, mid, hi)?);
            hi = mid;
        } else {
            path.push(perfect(src, lo, k)?);
            lo = mid;
        }
    }
    path.reverse();
    Ok(path)
}

/// RFC 9162 §2.1.4.1 PROOF(m, D[n]): the proof that the tree of `new_size` leaves extends the
/// tree of its first `old_size` leaves. Empty when the sizes are equal; `old_size` 0 (every
/// tree extends the empty one) and `old_size > new_size` are refused.
pub fn consistency_proof<S: SubtreeSource>(
    src: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, BuildError<S::Error>> {
    if old_size == 0 || old_size > new_size {
        return Err(ProofError::BadSizes {
            old: old_size,
            new: new_size,
        }
        .into());
    }
    let mut proof = Vec::new();
    if old_size == new_size {
        return Ok(proof);
    }
    // SUBPROOF(m, D[lo:hi], b) unrolled: `old_size` is the absolute boundary m, always in
    // (lo, hi]; `known` is the RFC's b, true while D[lo:m] is the whole old tree, whose root
    // the verifier already has. The hashes are appended after the recursion, so collect them
    // top-down and reverse.
    let (mut lo, mut hi) = (0, new_size);
    let mut known = true;
    while old_size < hi {
        let k = split(hi - lo);
        let mid = lo + k;
        if old_size <= mid {
            proof.push(range_hash(src, mid, hi)?);
            hi = mid;
        } else {
            proof.push(perfect(src, lo, k)?);
            lo = mid;
            known = false;
        }
    }
    if !known {
        proof.push(range_hash(src, lo, hi)?);
    }
    proof.reverse();
    Ok(proof)
}

/// RFC 9162 §2.1.3.2: checks that `leaf` (a leaf hash) is leaf `index` of the tree of `size`
/// leaves whose root is `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_len(index, size);
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            expected,
            got: proof.len(),
        });
    }
    let mut r = *leaf;
    let reached_root = climb(index, size - 1, proof, |p, on_left| {
        r = if on_left {
            node_hash(p, &r)
        } else {
            node_hash(&r, p)
        };
    });
    if !reached_root {
        return Err(ProofError::WrongLength {
            expected,
            got: proof.len(),
        });
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2: checks that the tree of `new_size` leaves with root `new_root` extends
/// the tree of `old_size` leaves with root `old_root`. Equal sizes need an empty proof and
/// equal roots; `old_size` 0 is consistent with every tree, given an empty proof.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::BadSizes {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == 0 || old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength {
                expected: 0,
                got: proof.len(),
            });
        }
        if old_size != 0 && old_root != new_root {
            return Err(ProofError::DifferentRoots { size: old_size });
        }
        return Ok(());
    }
    let expected = consistency_len(old_size, new_size);
    let wrong_length = ProofError::WrongLength {
        expected,
        got: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    // When the old tree is a perfect subtree its root is the first node of the walk, and the
    // proof leaves it out.
    let (seed, rest) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            None => return Err(wrong_length),
        }
    };
    let (mut node, mut last) = (old_size - 1, new_size - 1);
    while node & 1 == 1 {
        node >>= 1;
        last >>= 1;
    }
    let (mut old, mut new) = (seed, seed);
    let reached_root = climb(node, last, rest, |c, on_left| {
        if on_left {
            old = node_hash(c, &old);
            new = node_hash(c, &new);
        } else {
            new = node_hash(&new, c);
        }
    });
    if !reached_root {
        return Err(wrong_length);
    }
    if old != *old_root {
        return Err(ProofError::OldRootMismatch);
    }
    if new != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The right edge of the tree: the perfect subtrees along the binary decomposition of `size`,
/// largest first. Appending a leaf returns every perfect subtree node it completes, so a store
/// can persist exactly those. Keeps O(log n) memory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    /// One hash per set bit of `size`, from the highest bit down.
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Rebuilds the frontier of a tree of `size` leaves from its stored perfect subtrees
    /// (one lookup per set bit of `size`).
    pub fn load<S: SubtreeSource>(src: &S, size: u64) -> Result<Frontier, S::Error> {
        let mut nodes = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..u64::BITS).rev() {
            let width = 1u64 << level;
            if size & width != 0 {
                nodes.push(src.subtree(level as u8, start >> level)?);
                start += width;
            }
        }
        Ok(Frontier { size, nodes })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root of the tree: equals [`root`] of a source holding this tree.
    pub fn root(&self) -> Hash {
        let mut from_right = self.nodes.iter().rev();
        match from_right.next() {
            None => empty_root(),
            Some(last) => from_right.fold(*last, |right, left| node_hash(left, &right)),
        }
    }

    /// Appends one leaf hash; returns the completed nodes as `(level, index, hash)`: the leaf
    /// itself (level 0) first, then each merged parent in increasing level.
    ///
    /// A tree holds at most `u64::MAX` leaves; pushing onto a full one changes nothing and
    /// returns no nodes (2^64 - 1 appends cannot happen; only a corrupt store could load it).
    pub fn push(&mut self, leaf: Hash) -> Vec<(u8, u64, Hash)> {
        let Some(new_size) = self.size.checked_add(1) else {
            return Vec::new();
        };
        // The new leaf completes one node per trailing one bit of the old size: each merges
        // with the perfect subtree of that level, the last node of the frontier.
        let mut completed = Vec::with_capacity(self.size.trailing_ones() as usize + 1);
        let (mut hash, mut level, mut index) = (leaf, 0u8, self.size);
        completed.push((level, index, hash));
        while index & 1 == 1 {
            let Some(left) = self.nodes.pop() else {
                break; // unreachable: the frontier holds a node for every set bit of size
            };
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            completed.push((level, index, hash));
        }
        self.nodes.push(hash);
        self.size = new_size;
        completed
    }
}

/// The largest power of two strictly below `width`, for `width >= 2` (1 below that, which
/// callers never ask for).
fn split(width: u64) -> u64 {
    1 << 63u32.saturating_sub(width.saturating_sub(1).leading_zeros())
}

/// The hash of the perfect subtree of `width` (a power of two) leaves from `start` (a multiple
/// of `width`).
fn perfect<S: SubtreeSource>(
    src: &S,
    start: u64,
    width: u64,
) -> Result<Hash, BuildError<S::Error>> {
    let level = width.trailing_zeros();
    src.subtree(level as u8, start >> level)
        .map_err(BuildError::Source)
}

/// MTH(D[start:end]) for a range the RFC recursion visits (`start` a multiple of the smallest
/// power of two ≥ `end - start`): its binary decomposition into perfect subtrees, folded
/// from the right, the smallest piece first. The empty root for an empty range.
fn range_hash<S: SubtreeSource>(
    src: &S,
    start: u64,
    end: u64,
) -> Result<Hash, BuildError<S::Error>> {
    let mut rest = end.saturating_sub(start);
    let mut piece_end = end;
    let mut acc: Option<Hash> = None;
    while rest != 0 {
        let width = 1u64 << rest.trailing_zeros();
        let piece_start = piece_end - width;
        let piece = perfect(src, piece_start, width)?;
        acc = Some(match acc {
            None => piece,
            Some(right) => node_hash(&piece, &right),
        });
        piece_end = piece_start;
        rest &= rest - 1;
    }
    Ok(acc.unwrap_or_else(empty_root))
}

/// The number of hashes in the inclusion proof of leaf `index < size`: one per level below the
/// point where the paths to `index` and to the last leaf part, and one per left sibling above it.
fn inclusion_len(index: u64, size: u64) -> usize {
    let inner = u64::BITS - (index ^ (size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// The number of hashes in the consistency proof for `0 < old < new`: the inclusion proof of
/// the old tree's last perfect subtree among the new tree's nodes of that level, plus that
/// subtree itself unless it is the whole old tree.
fn consistency_len(old: u64, new: u64) -> usize {
    let level = old.trailing_zeros();
    let path = inclusion_len((old - 1) >> level, ((new - 1) >> level) + 1);
    path + usize::from(!old.is_power_of_two())
}

/// The walk up from a node to the root shared by RFC 9162 §2.1.3.2 (step 4) and §2.1.4.2
/// (step 6): `node` is the current node's index at its level and `last` the index of the
/// tree's last node there. Calls `merge(hash, on_left)` for each proof hash, `on_left` when
/// the hash is the left sibling. Returns whether the proof ended exactly at the root.
fn climb(mut node: u64, mut last: u64, proof: &[Hash], mut merge: impl FnMut(&Hash, bool)) -> bool {
    for p in proof {
        if last == 0 {
            return false;
        }
        if node & 1 == 1 || node == last {
            merge(p, true);
            // A right-edge node with no right sibling moves up without a hash.
            while node & 1 == 0 && node != 0 {
                node >>= 1;
                last >>= 1;
            }
        } else {
            merge(p, false);
        }
        node >>= 1;
        last >>= 1;
    }
    last == 0
}

/// A whole log kept in memory: every perfect subtree its [`Frontier`] completed. For tests,
/// seed generators and tools; the hub keeps the same nodes in its database.
#[derive(Debug, Clone, Default)]
pub struct MemoryLog {
    frontier: Frontier,
    nodes: std::collections::HashMap<(u8, u64), Hash>,
}

/// A subtree a [`MemoryLog`] does not have (not complete yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the log has no complete subtree at level {level}, index {index}")]
pub struct MissingNode {
    pub level: u8,
    pub index: u64,
}

impl MemoryLog {
    /// Appends a leaf hash; returns its index.
    pub fn push(&mut self, leaf: Hash) -> u64 {
        let index = self.frontier.size();
        for (level, i, h) in self.frontier.push(leaf) {
            self.nodes.insert((level, i), h);
        }
        index
    }

    pub fn size(&self) -> u64 {
        self.frontier.size()
    }
}

impl SubtreeSource for MemoryLog {
    type Error = MissingNode;

    fn subtree(&self, level: u8, index: u64) -> Result<Hash, MissingNode> {
        self.nodes
            .get(&(level, index))
            .copied()
            .ok_or(MissingNode { level, index })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::Cell;
    use std::convert::Infallible;

    fn h(s: &str) -> Hash {
        Digest::from_hex(s).unwrap().0
    }

    fn hx(hash: &Hash) -> String {
        Digest(*hash).to_hex()
    }

    // ---------------------------------------------------------------- the reference model

    /// Largest power of two below `n >= 2`, written independently of `split`.
    fn naive_k(n: u64) -> u64 {
        let mut k = 1;
        while k < n - k {
            k *= 2;
        }
        k
    }

    /// MTH straight from RFC 9162 §2.1.1.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = naive_k(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    /// PATH(m, D[n]) straight from RFC 9162 §2.1.3.1.
    fn naive_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = naive_k(n as u64) as usize;
        if m < k {
            let mut p = naive_path(m, &leaves[..k]);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = naive_path(m - k, &leaves[k..]);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    /// For each element of PATH(m, D[n]), whether it is the left sibling: the shape of the
    /// proof, which decides what a verifier computes.
    fn naive_sides(m: u64, n: u64) -> Vec<bool> {
        if n <= 1 {
            return Vec::new();
        }
        let k = naive_k(n);
        let mut sides = if m < k {
            naive_sides(m, k)
        } else {
            naive_sides(m - k, n - k)
        };
        sides.push(m >= k);
        sides
    }

    /// PROOF(m, D[n]) straight from RFC 9162 §2.1.4.1.
    fn naive_consistency(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        fn subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
            let n = leaves.len();
            if m == n {
                return if b { Vec::new() } else { vec![mth(leaves)] };
            }
            let k = naive_k(n as u64) as usize;
            if m <= k {
                let mut p = subproof(m, &leaves[..k], b);
                p.push(mth(&leaves[k..]));
                p
            } else {
                let mut p = subproof(m - k, &leaves[k..], false);
                p.push(mth(&leaves[..k]));
                p
            }
        }
        subproof(m, leaves, true)
    }

    /// Every perfect aligned subtree of the tree, by level then index.
    fn naive_nodes(leaves: &[Hash]) -> Vec<Vec<Hash>> {
        let mut levels = Vec::new();
        let mut width = 1;
        while width <= leaves.len() {
            levels.push(leaves.chunks_exact(width).map(mth).collect());
            width *= 2;
        }
        levels
    }

    // ---------------------------------------------------------------- sources

    /// A store that keeps what `Frontier::push` reports, as the hub's table does, and counts
    /// lookups.
    #[derive(Default)]
    struct Store {
        levels: Vec<Vec<Hash>>,
        reads: Cell<u64>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("no stored subtree at level {level}, index {index}")]
    struct Missing {
        level: u8,
        index: u64,
    }

    impl SubtreeSource for Store {
        type Error = Missing;
        fn subtree(&self, level: u8, index: u64) -> Result<Hash, Missing> {
            self.reads.set(self.reads.get() + 1);
            self.levels
                .get(level as usize)
                .and_then(|l| l.get(index as usize))
                .copied()
                .ok_or(Missing { level, index })
        }
    }

    impl Store {
        fn keep(&mut self, nodes: Vec<(u8, u64, Hash)>) {
            for (i, (level, index, hash)) in nodes.into_iter().enumerate() {
                assert_eq!(
                    level as usize, i,
                    "nodes come leaf first, by increasing level"
                );
                if self.levels.len() == level as usize {
                    self.levels.push(Vec::new());
                }
                let at = &mut self.levels[level as usize];
                assert_eq!(
                    at.len() as u64,
                    index,
                    "each node is completed once, in order"
                );
                at.push(hash);
            }
        }
    }

    fn leaves(n: usize, seed: u64) -> Vec<Hash> {
        (0..n as u64)
            .map(|i| leaf_hash(&[seed.to_le_bytes(), i.to_le_bytes()].concat()))
            .collect()
    }

    /// Pushes every leaf; returns the store and the frontier after each push (index = size).
    fn build(leaves: &[Hash]) -> (Store, Vec<Frontier>) {
        let mut store = Store::default();
        let mut f = Frontier::new();
        let mut frontiers = vec![f.clone()];
        for leaf in leaves {
            store.keep(f.push(*leaf));
            frontiers.push(f.clone());
        }
        (store, frontiers)
    }

    /// A tree of any size whose leaves are all the same, so every perfect subtree of a level
    /// has one hash: lets the tests reach sizes near `u64::MAX`. Checks that every lookup
    /// names a real subtree, and counts them.
    struct Uniform {
        by_level: Vec<Hash>,
        size: u64,
        reads: Cell<u64>,
    }

    impl Uniform {
        fn new(size: u64) -> Uniform {
            let mut by_level = vec![leaf_hash(b"same")];
            for l in 1..64 {
                let below = by_level[l - 1];
                by_level.push(node_hash(&below, &below));
            }
            Uniform {
                by_level,
                size,
                reads: Cell::new(0),
            }
        }
    }

    impl SubtreeSource for Uniform {
        type Error = Infallible;
        fn subtree(&self, level: u8, index: u64) -> Result<Hash, Infallible> {
            assert!(level < 64, "level {level}");
            let end = index.checked_add(1).and_then(|i| i.checked_mul(1 << level));
            assert!(
                end.is_some_and(|e| e <= self.size),
                "subtree ({level}, {index}) is outside the tree of {}",
                self.size
            );
            self.reads.set(self.reads.get() + 1);
            Ok(self.by_level[level as usize])
        }
    }

    fn flip(hash: &Hash, bit: usize) -> Hash {
        let mut out = *hash;
        out[bit / 8] ^= 1 << (bit % 8);
        out
    }

    // ---------------------------------------------------------------- golden vectors

    /// The Certificate Transparency reference leaves (transparency-dev/merkle
    /// `testonly/constants.go`, certificate-transparency-go `merkletree` tests).
    fn ct_leaves() -> Vec<Hash> {
        let data: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        data.iter().map(|d| leaf_hash(d)).collect()
    }

    const CT_ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn hashes_are_domain_separated_sha256() {
        assert_eq!(hx(&empty_root()), CT_ROOTS[0]);
        // The leaf hash of "" is the root of the one-leaf tree.
        assert_eq!(hx(&leaf_hash(b"")), CT_ROOTS[1]);
        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        assert_eq!(
            node_hash(&a, &b),
            Digest::of(&[&[1], &a, &b]).0,
            "node = SHA-256(0x01 || left || right)"
        );
        assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
    }

    #[test]
    fn golden_roots_of_the_ct_test_tree() {
        let leaves = ct_leaves();
        let (store, frontiers) = build(&leaves);
        for (size, want) in CT_ROOTS.iter().enumerate() {
            assert_eq!(hx(&frontiers[size].root()), *want, "frontier of {size}");
            assert_eq!(
                hx(&root(&store, size as u64).unwrap()),
                *want,
                "root of {size}"
            );
            assert_eq!(hx(&mth(&leaves[..size])), *want, "reference of {size}");
        }
    }

    #[test]
    fn golden_inclusion_proofs() {
        // (leaf index, tree size, proof) from transparency-dev/merkle (whose table counts
        // leaves from 1).
        let cases: [(u64, u64, &[&str]); 5] = [
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        let leaves = ct_leaves();
        let (store, _) = build(&leaves);
        for (index, size, want) in cases {
            let proof = inclusion_proof(&store, index, size).unwrap();
            let got: Vec<String> = proof.iter().map(hx).collect();
            assert_eq!(got, want, "leaf {index} of {size}");
            let root = h(CT_ROOTS[size as usize]);
            verify_inclusion(&leaves[index as usize], index, size, &proof, &root).unwrap();
        }
    }

    #[test]
    fn golden_consistency_proofs() {
        let cases: [(u64, u64, &[&str]); 5] = [
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                6,
                7,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        let (store, _) = build(&ct_leaves());
        for (old, new, want) in cases {
            let proof = consistency_proof(&store, old, new).unwrap();
            let got: Vec<String> = proof.iter().map(hx).collect();
            assert_eq!(got, want, "{old} to {new}");
            let (old_root, new_root) = (h(CT_ROOTS[old as usize]), h(CT_ROOTS[new as usize]));
            verify_consistency(old, new, &old_root, &new_root, &proof).unwrap();
        }
    }

    // ---------------------------------------------------------------- examples and edges

    #[test]
    fn push_reports_the_nodes_it_completes() {
        let l = ct_leaves();
        let mut f = Frontier::new();
        assert_eq!(f.push(l[0]), vec![(0, 0, l[0])]);
        let n01 = node_hash(&l[0], &l[1]);
        assert_eq!(f.push(l[1]), vec![(0, 1, l[1]), (1, 0, n01)]);
        assert_eq!(f.push(l[2]), vec![(0, 2, l[2])]);
        let n23 = node_hash(&l[2], &l[3]);
        let n03 = node_hash(&n01, &n23);
        assert_eq!(f.push(l[3]), vec![(0, 3, l[3]), (1, 1, n23), (2, 0, n03)]);
        assert_eq!(f.size(), 4);
        assert_eq!(hx(&f.root()), CT_ROOTS[4]);
        assert_eq!(Frontier::new(), Frontier::default());
        assert_eq!(Frontier::new().root(), empty_root());
    }

    #[test]
    fn impossible_requests_are_refused() {
        let (store, _) = build(&ct_leaves());
        let refused = |r: Result<Vec<Hash>, BuildError<Missing>>| r.unwrap_err();
        assert_eq!(
            refused(inclusion_proof(&store, 3, 3)),
            BuildError::Proof(ProofError::IndexOutOfRange { index: 3, size: 3 })
        );
        assert_eq!(
            refused(inclusion_proof(&store, 0, 0)),
            BuildError::Proof(ProofError::IndexOutOfRange { index: 0, size: 0 })
        );
        assert_eq!(
            refused(consistency_proof(&store, 0, 5)),
            BuildError::Proof(ProofError::BadSizes { old: 0, new: 5 })
        );
        assert_eq!(
            refused(consistency_proof(&store, 6, 5)),
            BuildError::Proof(ProofError::BadSizes { old: 6, new: 5 })
        );
        // A size the store has not reached: the source's error comes back, unchanged.
        assert_eq!(
            refused(inclusion_proof(&store, 0, 9)),
            BuildError::Source(Missing { level: 0, index: 8 })
        );
        assert_eq!(
            root(&store, 12).unwrap_err(),
            BuildError::Source(Missing { level: 2, index: 2 })
        );
        assert_eq!(
            Frontier::load(&store, 16).unwrap_err(),
            Missing { level: 4, index: 0 }
        );
        assert_eq!(
            BuildError::<Missing>::Source(Missing { level: 2, index: 7 }).to_string(),
            "no stored subtree at level 2, index 7"
        );
        assert_eq!(
            BuildError::<Missing>::Proof(ProofError::RootMismatch).to_string(),
            "the proof does not reproduce the expected root"
        );
    }

    #[test]
    fn consistency_edge_sizes() {
        let r = h(CT_ROOTS[3]);
        let other = h(CT_ROOTS[4]);
        // Every tree extends the empty one, whatever the roots; the proof must be empty.
        verify_consistency(0, 0, &other, &r, &[]).unwrap();
        verify_consistency(0, 3, &other, &r, &[]).unwrap();
        assert_eq!(
            verify_consistency(0, 3, &other, &r, &[r]),
            Err(ProofError::WrongLength {
                expected: 0,
                got: 1
            })
        );
        // Equal sizes: equal roots and an empty proof.
        verify_consistency(3, 3, &r, &r, &[]).unwrap();
        assert_eq!(
            verify_consistency(3, 3, &r, &other, &[]),
            Err(ProofError::DifferentRoots { size: 3 })
        );
        assert!(verify_consistency(3, 3, &r, &r, &[r]).is_err());
        assert_eq!(
            verify_consistency(4, 3, &r, &r, &[]),
            Err(ProofError::BadSizes { old: 4, new: 3 })
        );
    }

    #[test]
    fn verify_rejects_absurd_sizes_without_panicking() {
        let x = leaf_hash(b"x");
        let big = [
            u64::MAX,
            u64::MAX - 1,
            u64::MAX / 2,
            u64::MAX / 2 + 1,
            1 << 63,
        ];
        for &size in &big {
            for index in [0, 1, size / 2, size - 1, size, u64::MAX] {
                for len in [0, 1, 63, 64, 65, 127, 128, 200] {
                    let proof = vec![x; len];
                    let r = verify_inclusion(&x, index, size, &proof, &x);
                    assert!(r.is_err(), "index {index} of {size}, {len} hashes");
                }
            }
            for old in [1, 2, 3, size / 2, size - 1, size] {
                for len in [0, 1, 64, 65, 127, 128, 200] {
                    let proof = vec![x; len];
                    let r = verify_consistency(old, size, &x, &leaf_hash(b"y"), &proof);
                    assert!(r.is_err(), "{old} to {size}, {len} hashes");
                    let r = verify_consistency(size, old, &x, &x, &proof);
                    assert!(r.is_err() || (old == size && len == 0));
                }
            }
        }
    }

    #[test]
    fn huge_trees_need_few_lookups() {
        let sizes = [
            u64::MAX,
            u64::MAX - 1,
            1 << 63,
            (1 << 63) + 1,
            (1 << 63) - 1,
            (1 << 40) + 12_345,
        ];
        for size in sizes {
            let src = Uniform::new(size);
            let r = root(&src, size).unwrap();
            assert!(src.reads.get() <= 64);
            let f = Frontier::load(&src, size).unwrap();
            assert_eq!(f.root(), r);
            for index in [0, 1, size / 3, size / 2, size - 2, size - 1] {
                src.reads.set(0);
                let proof = inclusion_proof(&src, index, size).unwrap();
                assert!(src.reads.get() <= 129, "{} reads", src.reads.get());
                verify_inclusion(&src.by_level[0], index, size, &proof, &r).unwrap();
            }
            for old in [1, 2, 3, size / 3, size / 2, size - 1, size] {
                src.reads.set(0);
                let proof = consistency_proof(&src, old, size).unwrap();
                assert!(src.reads.get() <= 129, "{} reads", src.reads.get());
                let old_root = root(&src, old).unwrap();
                verify_consistency(old, size, &old_root, &r, &proof).unwrap();
            }
        }
        // A full tree takes no more leaves.
        let src = Uniform::new(u64::MAX);
        let mut full = Frontier::load(&src, u64::MAX).unwrap();
        let before = full.clone();
        assert!(full.push(leaf_hash(b"more")).is_empty());
        assert_eq!(full, before);
    }

    // ---------------------------------------------------------------- properties

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The frontier completes exactly the reference tree's perfect subtrees, its root
        /// and `root` agree with the reference at every size, and it reloads from the store.
        #[test]
        fn frontier_matches_the_reference(n in 0usize..300, seed in any::<u64>()) {
            let leaves = leaves(n, seed);
            let (store, frontiers) = build(&leaves);
            prop_assert_eq!(&store.levels, &naive_nodes(&leaves));
            for (size, f) in frontiers.iter().enumerate() {
                let want = mth(&leaves[..size]);
                prop_assert_eq!(f.size(), size as u64);
                prop_assert_eq!(f.root(), want);
                store.reads.set(0);
                prop_assert_eq!(root(&store, size as u64).unwrap(), want);
                prop_assert!(store.reads.get() <= u64::from((size as u64).count_ones()));
                prop_assert_eq!(&Frontier::load(&store, size as u64).unwrap(), f);
            }
        }

        /// Every inclusion proof is the RFC's, verifies, and stops verifying when a bit of
        /// the leaf, the root or any proof hash changes, or the index, or the proof's length.
        /// A changed size is caught unless the proof has the same shape in both trees (the
        /// RFC's proofs do not bind the size: the checkpoint's signature does).
        #[test]
        fn inclusion_proofs_verify_and_bind(
            n in 1usize..300,
            seed in any::<u64>(),
            pick in any::<u64>(),
        ) {
            let leaves = leaves(n, seed);
            let (store, frontiers) = build(&leaves);
            let size = n as u64;
            let index = pick % size;
            let leaf = leaves[index as usize];
            let root = frontiers[n].root();
            let proof = inclusion_proof(&store, index, size).unwrap();
            prop_assert_eq!(&proof, &naive_path(index as usize, &leaves));
            prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));

            for bit in 0..256 {
                prop_assert!(verify_inclusion(&flip(&leaf, bit), index, size, &proof, &root).is_err());
                prop_assert!(verify_inclusion(&leaf, index, size, &proof, &flip(&root, bit)).is_err());
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i] = flip(&bad[i], bit);
                    prop_assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
                }
            }
            for other in 0..size.saturating_add(2) {
                if other != index {
                    prop_assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
                }
            }
            let sizes = [size - 1, size + 1, size * 2, size / 2, size + 7, u64::MAX];
            for other in sizes.into_iter().filter(|&s| s != size) {
                let same_shape = index < other && naive_sides(index, other) == naive_sides(index, size);
                let verified = verify_inclusion(&leaf, index, other, &proof, &root).is_ok();
                prop_assert_eq!(verified, same_shape, "size {} for {}", other, size);
            }
            if let Some((_, shorter)) = proof.split_last() {
                prop_assert!(verify_inclusion(&leaf, index, size, shorter, &root).is_err());
            }
            let mut longer = proof.clone();
            longer.push(root);
            prop_assert!(verify_inclusion(&leaf, index, size, &longer, &root).is_err());
        }

        /// Every consistency proof is the RFC's, verifies, and stops verifying when a bit of
        /// either root or any proof hash changes, or when it is cut short or extended.
        #[test]
        fn consistency_proofs_verify_and_bind(
            n in 1usize..300,
            seed in any::<u64>(),
            pick in any::<u64>(),
        ) {
            let leaves = leaves(n, seed);
            let (store, frontiers) = build(&leaves);
            let new = n as u64;
            let old = pick % new + 1;
            let (old_root, new_root) = (frontiers[old as usize].root(), frontiers[n].root());
            store.reads.set(0);
            let proof = consistency_proof(&store, old, new).unwrap();
            prop_assert!(store.reads.get() <= 129);
            if old < new {
                prop_assert_eq!(&proof, &naive_consistency(old as usize, &leaves));
            } else {
                prop_assert!(proof.is_empty());
            }
            prop_assert_eq!(verify_consistency(old, new, &old_root, &new_root, &proof), Ok(()));

            for bit in 0..256 {
                let bad_old = flip(&old_root, bit);
                let bad_new = flip(&new_root, bit);
                prop_assert!(verify_consistency(old, new, &bad_old, &new_root, &proof).is_err());
                prop_assert!(verify_consistency(old, new, &old_root, &bad_new, &proof).is_err());
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i] = flip(&bad[i], bit);
                    prop_assert!(verify_consistency(old, new, &old_root, &new_root, &bad).is_err());
                }
            }
            for cut in 0..proof.len() {
                let shorter = &proof[..cut];
                prop_assert!(verify_consistency(old, new, &old_root, &new_root, shorter).is_err());
            }
            let mut longer = proof.clone();
            longer.push(new_root);
            prop_assert!(verify_consistency(old, new, &old_root, &new_root, &longer).is_err());
            // A proof from another old size does not verify against this old root.
            if old > 1 {
                let wrong_size = old - 1;
                let other = consistency_proof(&store, wrong_size, new).unwrap();
                prop_assert!(verify_consistency(old, new, &old_root, &new_root, &other).is_err());
            }
        }
    }

    proptest! {
        /// Proofs in trees of any size, up to `u64::MAX` leaves, verify and read O(log n)
        /// stored nodes.
        #[test]
        fn proofs_of_any_size_verify(size in 1u64.., pick in any::<u64>(), pick_old in any::<u64>()) {
            let src = Uniform::new(size);
            let r = root(&src, size).unwrap();
            let index = pick % size;
            src.reads.set(0);
            let proof = inclusion_proof(&src, index, size).unwrap();
            prop_assert!(src.reads.get() <= 129);
            prop_assert_eq!(verify_inclusion(&src.by_level[0], index, size, &proof, &r), Ok(()));
            let old = pick_old % size + 1;
            src.reads.set(0);
            let proof = consistency_proof(&src, old, size).unwrap();
            prop_assert!(src.reads.get() <= 129);
            let old_root = root(&src, old).unwrap();
            prop_assert_eq!(verify_consistency(old, size, &old_root, &r, &proof), Ok(()));
        }

        /// The verifiers never panic, whatever they are given.
        #[test]
        fn verifiers_never_panic(
            a in any::<u64>(),
            b in any::<u64>(),
            len in 0usize..140,
            fill in any::<[u8; 32]>(),
        ) {
            let proof = vec![fill; len];
            let _ = verify_inclusion(&fill, a, b, &proof, &fill);
            let _ = verify_consistency(a, b, &fill, &fill, &proof);
            let _ = verify_consistency(a.min(b), a.max(b), &fill, &fill, &proof);
        }
    }
}
