//! Arbitrary bytes as a signed policy bundle (decode, then verify with a fixed key) and as a
//! policy document: nothing may panic. The seeds are signed by the same fixed key, so verified
//! bundles also reach the payload parse and `policy()`.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tongbu_shared::policy::{PolicyBundle, PolicyDoc};
use tongbu_shared::signed::Signed;
use tongbu_shared::{KeyPair, PublicKey};

/// Must match `examples/gen_seeds.rs`.
const HUB_SEED: [u8; 32] = [0x42; 32];

static HUB_KEY: LazyLock<PublicKey> = LazyLock::new(|| match KeyPair::from_seed(&HUB_SEED) {
    Ok(k) => k.public_key(),
    Err(e) => panic!("fixed fuzz key: {e}"),
});

fuzz_target!(|data: &[u8]| {
    if let Ok(signed) = serde_json::from_slice::<Signed<PolicyBundle>>(data)
        && let Ok(bundle) = signed.verify(&HUB_KEY)
    {
        let _ = bundle.policy();
        let _ = bundle.doc().check();
    }
    let _ = PolicyDoc::parse(data);
});
