//! Stored Raft records from arbitrary bytes: decoding must return a value or an error, never
//! panic, and anything that decodes must have passed its checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zonekv_raft::{RangeId, codec};

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = codec::decode_entry(RangeId::new(1), 7, data) {
        assert_eq!(entry.log_id.index, 7);
        assert_eq!(codec::decode_entry(RangeId::new(1), 7, &codec::encode_entry(&entry)).unwrap(), entry);
    }
    let _ = codec::decode_vote(RangeId::new(1), data);
    let _ = codec::decode_applied(RangeId::new(1), data);
    let _ = codec::decode_log_id(RangeId::new(1), "fuzz", data);
    let _ = zonekv_raft::value::decode(data);
});
