//! Arbitrary bytes into `parse_submission`: no panic, and every returned record's exact bytes
//! parse (strictly, as the agent does) to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tongbu_shared::Record;
use tongbu_shared::input::parse_submission;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = parse_submission(data) {
        for (i, r) in records.iter().enumerate() {
            match Record::parse(&r.bytes) {
                Ok(again) => assert_eq!(again, r.record, "record {} re-parses differently", i + 1),
                Err(e) => panic!("record {} bytes do not re-parse: {e}", i + 1),
            }
        }
    }
});
