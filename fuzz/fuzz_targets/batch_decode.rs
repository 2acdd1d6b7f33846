//! Arbitrary bytes decoded as a `BatchRequest`: when they decode, serializing and decoding again
//! gives the same request, with every envelope body byte for byte the same (bodies are raw JSON
//! carried verbatim).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tongbu_shared::protocol::BatchRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<BatchRequest>(data) else {
        return;
    };
    let bytes = match serde_json::to_vec(&req) {
        Ok(b) => b,
        Err(e) => panic!("a decoded BatchRequest does not serialize: {e}"),
    };
    let again: BatchRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => panic!("a re-serialized BatchRequest does not decode: {e}"),
    };
    assert_eq!(req.envelopes.len(), again.envelopes.len());
    for (a, b) in req.envelopes.iter().zip(&again.envelopes) {
        assert_eq!(a.body, b.body, "envelope seq {} body bytes changed", a.seq);
        assert_eq!(a, b);
    }
    assert_eq!(req, again);
});
