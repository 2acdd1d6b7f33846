//! Arbitrary bytes into the record parsers: neither may panic, and whatever the strict parser
//! accepts the lenient one accepts too, giving the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tongbu_shared::Record;

fuzz_target!(|data: &[u8]| {
    let strict = Record::parse(data);
    let lenient = Record::parse_lenient(data);
    if let Ok(strict) = strict {
        match lenient {
            Ok(lenient) => assert_eq!(strict, lenient, "strict and lenient records differ"),
            Err(e) => panic!("strict parse succeeded but lenient failed: {e}"),
        }
    }
});
