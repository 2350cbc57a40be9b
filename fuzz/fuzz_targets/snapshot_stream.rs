//! Snapshot streams from arbitrary bytes: importing must fail cleanly or yield pairs inside
//! the declared spans.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zonekv_engine::{Cf, KeyRange, export};

fuzz_target!(|data: &[u8]| {
    let spans = [(Cf::Data, KeyRange::half_open(b"a".to_vec(), b"m".to_vec()))];
    let mut input = data;
    let _ = export::import(&mut input, &spans, |cf, k, _v| {
        assert!(spans.iter().any(|(c, r)| *c == cf && r.contains(&k)));
        Ok(())
    });
});
