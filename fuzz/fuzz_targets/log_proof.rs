//! Arbitrary bytes as a receipt's log proof with the agent's view of it (`Case`): decoding,
//! checking the checkpoint's signature with a fixed key and verifying the inclusion and
//! consistency proofs must never panic, whatever the sizes, indexes and hashes; and a proof
//! that passes must still pass after a serialization round trip. The seeds carry checkpoints
//! signed by the fixed key over a real tree, so mutated proofs reach the Merkle verifiers.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use tongbu_shared::checkpoint::{LogProof, Trusted, check};
use tongbu_shared::{AgentId, Digest, KeyPair, PublicKey};

/// Must match `examples/gen_seeds.rs`.
const HUB_SEED: [u8; 32] = [0x42; 32];

static HUB_KEY: LazyLock<PublicKey> = LazyLock::new(|| match KeyPair::from_seed(&HUB_SEED) {
    Ok(k) => k.public_key(),
    Err(e) => panic!("fixed fuzz key: {e}"),
});

#[derive(Deserialize)]
struct Case {
    agent: AgentId,
    acked_seq: u64,
    head_hash: Digest,
    trusted: Option<Trusted>,
    proof: LogProof,
}

fuzz_target!(|data: &[u8]| {
    let Ok(case) = serde_json::from_slice::<Case>(data) else {
        return;
    };
    let Ok(first) = check(
        &HUB_KEY,
        &case.agent,
        case.acked_seq,
        &case.head_hash,
        &case.proof,
        case.trusted.as_ref(),
    ) else {
        return;
    };
    let bytes = match serde_json::to_vec(&case.proof) {
        Ok(b) => b,
        Err(e) => panic!("a decoded LogProof does not serialize: {e}"),
    };
    let again: LogProof = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => panic!("a re-serialized LogProof does not decode: {e}"),
    };
    match check(
        &HUB_KEY,
        &case.agent,
        case.acked_seq,
        &case.head_hash,
        &again,
        case.trusted.as_ref(),
    ) {
        Ok(second) => assert_eq!(first, second),
        Err(e) => panic!("a checked proof fails after a round trip: {e}"),
    }
});
