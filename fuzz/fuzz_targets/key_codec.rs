//! The key layout from arbitrary bytes: parsing foreign keys never panics, and encoding keeps
//! the order of user keys and of log indexes (scans and log reads depend on it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use zonekv_raft::{RangeId, keys};

fuzz_target!(|data: &[u8]| {
    let _ = keys::log_index(RangeId::new(1), data);
    let _ = keys::user_key(data);
    let (a, b) = data.split_at(data.len() / 2);
    assert_eq!(a.cmp(b), keys::data_key(a).cmp(&keys::data_key(b)));
    assert_eq!(keys::user_key(&keys::data_key(a)), Some(a));
    if let (Ok(x), Ok(y)) = (<[u8; 8]>::try_from(&data[..data.len().min(8)]), <[u8; 8]>::try_from(b.get(..8).unwrap_or(&[]))) {
        let (i, j) = (u64::from_be_bytes(x), u64::from_be_bytes(y));
        assert_eq!(i.cmp(&j), keys::log_key(RangeId::new(7), i).cmp(&keys::log_key(RangeId::new(7), j)));
        assert_eq!(keys::log_index(RangeId::new(7), &keys::log_key(RangeId::new(7), i)), Some(i));
        assert_eq!(keys::log_index(RangeId::new(8), &keys::log_key(RangeId::new(7), i)), None);
    }
});
