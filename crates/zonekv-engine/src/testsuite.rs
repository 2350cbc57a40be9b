//! The conformance suite every engine implementation must pass.
//!
//! Each engine crate instantiates it with [`engine_conformance_tests!`](crate::engine_conformance_tests),
//! passing a closure that creates a fresh, empty engine together with a guard that keeps its
//! resources (a temporary directory) alive for the test.

use std::collections::BTreeMap;
use std::ops::Bound;

use proptest::prelude::*;

use crate::export::{export, import};
use crate::{Cf, Engine, KeyRange, Reader, WriteBatch};

/// Generates one `#[test]` per conformance case for the engine built by `$make`, a closure
/// `Fn() -> (E, G)` returning a fresh engine and a guard dropped at the end of the test.
#[macro_export]
macro_rules! engine_conformance_tests {
    ($make:expr) => {
        $crate::engine_conformance_tests!(@cases $make;
            get_missing_is_none, put_get_delete, column_families_are_independent,
            batch_is_ordered_and_atomic, delete_range_is_half_open, scan_forward_bounds,
            scan_reverse_bounds, scan_empty_and_inverted_ranges, snapshot_is_isolated,
            scan_does_not_see_later_writes, binary_keys_and_empty_values,
            export_import_round_trip, export_detects_corruption, approximate_size_sees_flushed_data,
            model_check);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                $crate::testsuite::$case(|| ($make)());
            }
        )*
    };
}

fn put(e: &impl Engine, cf: Cf, k: &[u8], v: &[u8]) {
    let mut b = WriteBatch::new();
    b.put(cf, k, v);
    e.write(&b, false).expect("write");
}

fn keys_of(r: &impl Reader, cf: Cf, range: &KeyRange, reverse: bool) -> Vec<Vec<u8>> {
    r.scan(cf, range, reverse).expect("scan").map(|p| p.expect("pair").0).collect()
}

fn fill(e: &impl Engine, keys: &[&[u8]]) {
    let mut b = WriteBatch::new();
    for k in keys {
        b.put(Cf::Data, *k, [b"v-", *k].concat());
    }
    e.write(&b, true).expect("write");
}

/// After a flush, a span's size estimate reflects the data in it (incompressible values, so
/// compressing engines estimate them near their real size) and an empty span's is 0.
pub fn approximate_size_sees_flushed_data<E: Engine, G>(make: impl Fn() -> (E, G)) {
    let (e, _g) = make();
    let mut b = WriteBatch::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..2048u32 {
        let value: Vec<u8> = (0..512)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        b.put(Cf::Data, format!("a{i:05}"), value);
    }
    e.write(&b, true).expect("write");
    e.flush().expect("flush");
    let filled = KeyRange::prefix(b"a");
    let size = e.approximate_size(Cf::Data, &filled).expect("estimate");
    assert!(
        (512 << 10..=2 << 20).contains(&size),
        "2048 pairs of 512 random bytes estimated at {size} bytes"
    );
    let empty = KeyRange::prefix(b"b");
    assert_eq!(e.approximate_size(Cf::Data, &empty).expect("estimate"), 0);
    assert_eq!(e.approximate_size(Cf::RaftLog, &filled).expect("estimate"), 0, "other column families");
}

/// A missing key reads as `None`.
pub fn get_missing_is_none<E: Engine, G>(make: impl Fn() -> (E, G)) {
    let (e, _g) = make();
    assert_eq!(e.get(Cf::Data, b"nope").unwrap(), None);
}

/// A put is visible to get; a delete removes it; an overwrite replaces it.
pub fn put_get_delete<E: Engine, G>(make: impl Fn() -> (E, G)) {
    let (e, _g) = make();
    put(&e, Cf::Data, b"k", b"v1");
    assert_eq!(e.get(Cf::Data, b"k").unwrap().as_deref(), Some(&b"v1"[..]));
    put(&e, Cf::Data, b"k", b"v2");
    assert_eq!(e.get(Cf::Data, b"k").unwrap().as_deref(), Some(&b"v2"[..]));
    let mut b = WriteBatch::new();
    b.delete(Cf::Data, b"k");
    e.write(&b, true).unwrap();
    assert_eq!(e.get(Cf::Data, b"k").unwrap(), None);
}

/// The same key in different column families holds different values.
pub fn column_families_are_independent<E: Engine, G>(make: impl Fn() -> (E, G)) {
    let (e, _g) = make();
    for cf in Cf::ALL {
        put(&e, cf, b"same", cf.name().as_bytes());
    }
    for cf in Cf::ALL {
        assert_eq!(e.get(cf, b"same").unwrap().unwrap(), cf.name().as_bytes());
        assert_eq!(keys_of(&e, cf, &KeyRange::all(), false), vec![b"same".to_vec()]);
    }
    let mut b = WriteBatch::new();
    b.delete_range(Cf::RaftLog, &b""[..], &b"\xff\xff"[..]);
    e.write(&b, false).unwrap();
    assert_eq!(e.get(Cf::RaftLog, b"same").unwrap(), None);
    assert!(e.get(Cf::Data, b"same").unwrap().is_some());
}

/// Operations of a batch apply in order and all together.
pub fn batch_is_ordered_and_atomic<E: Engine, G>(make: impl Fn() -> (E, G)) {
    let (e, _g) = make();
    let snap_before = e.snapshot();
    let mut b = WriteBatch::new();
    b.put(Cf::Data, &b"a"[..], &b"1"[..]);
    b.put(Cf::Data, &b"a"[..], &b"2"[..]);
    b.put(Cf::Data, &b"b"[..], &b"1"[..]);
    b.delete(Cf::Data, &b"b"[..]);
    b.put(Cf::RaftMeta, &b"m"[..], &b"x"[..]);
    assert_eq!(b.len(), 5);
    e.write(&b, true).unwrap();
    assert_eq!(e.get(Cf::Data, b"a").unwrap().unwrap(), b"2");
    assert_eq!(e.get(Cf::Data, b"b").unwrap(), None);
    assert_eq!(e.get(Cf::RaftMeta, b"m").unwrap().unwrap(), b"x");
    assert_eq!(snap_before.get(Cf::Data, b"a").unwrap(), None);
    assert_eq!(snap_before.get(Cf::RaftMeta, b"m").unwrap(), None);
}

/// `delete_range(start, end)` removes `start` and everything up to, not including, `end`.
pub fn delete_range_is_half_open<E: Engine, G>(make: impl Fn() -> (E, G)) {
    let (e, _g) = make();
    fill(&e, &[b"a", b"b", b"b\0", b"c", b"d"]);
    let mut b = WriteBatch::new();
    b.delete_range(Cf::Data, &b"b"[..], &b"d"[..]);
    b.put(Cf::Data, &b"c2"[..], &b"after"[..]);
    e.write(&b, false).unwrap();
    assert_eq!(
        keys_of(&e, Cf::Data, &KeyRange::all(), false),
        vec![b"a".to_vec(), b"c2".to_vec(), b"d".to_vec()]
    );
}

fn range(start: Bound<&[u8]>, end: Bound<&[u8]>) -> KeyRange {
    let own = |b: Bound<&[u8]>| match b {
        Bound::Included(k) => Bound::Included(k.to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    };
    KeyRange { start: own(start), end: own(end) }
}

fn strs(v: Vec<Vec<u8>>) -> Vec<String> {
    v.into_iter().map(|k| String::from_utf8(k).unwrap()).collect()
}

/// Forward scans honour inclusive, exclusive and open bounds.
pub fn scan_forward_bounds<E: Engine, G>(make: impl Fn() -> (E, G)) {
    let (e, _g) = make();
    fill(&e, &[b"a", b"b", b"c", b"d", b"e"]);
    let cases: Vec<(KeyRange, Vec<&str>)> = vec![
        (KeyRange::all(), vec!["a", "b", "c", "d", "e"]),
        (range(Bound::Included(b"b"), Bound::Excluded(b"d")), vec!["b", "c"]),
        (range(Bound::Excluded(b"b"), Bound::Included(b"d")), vec!["c", "d"]),
        (range(Bound::Included(b"bb"), Bound::Unbounded), vec!["c", "d", "e"]),
        (range(Bound::Unbounded, Bound::Excluded(b"c")), vec!["a", "b"]),
        (KeyRange::prefix(b"c"), vec!["c"]),
    ];
    for (r, want) in cases {
        assert_eq!(strs(keys_of(&e, Cf::Data, &r, false)), want, "range {r:?}");
    }
    let values: Vec<_> =
        e.scan(Cf::Data, &KeyRange::prefix(b"d"), false).unwrap().map(|p| p.unwrap().1).collect();
    assert_eq!(values, vec![b"v-d".to_vec()]);
}

/// Reverse scans return the same keys in descending order, honouring every bound kind.
pub fn scan_reverse_bounds<E: Engine, G>(make: impl Fn() -> (E, G)) {
    let (e, _g) = make();
    fill(&e, &[b"a", b"b", b"c", b"d", b"e"]);
    let cases: Vec<(KeyRange, Vec<&str>)> = vec![
        (KeyRange::all(), vec!["e", "d", "c", "b", "a"]),
        (range(Bound::Included(b"b"), Bound::Excluded(b"d")), vec!["c", "b"]),
        (range(Bound::Excluded(b"b"), Bound::Included(b"d")), vec!["d", "c"]),
        (range(Bound::Unbounded, Bound::Included(b"c")), vec!["c", "b", "a"]),
        (range(Bound::Excluded(b"c"), Bound::Unbounded), vec!["e", "d"]),
        (range(Bound::Unbounded, Bound::Excluded(b"cc")), vec!["c", "b", "a"]),
    ];
    for (r, want) in cases {
        assert_eq!(strs(keys_of(&e, Cf::Data, &r, true)), want, "range {r:?}");
    }
}

/// Empty and inverted ranges yield nothing, in both directions.
pub fn scan_empty_and_inverted_ranges<E: Engine, G>(make: impl Fn() -> (E, G)) {
    let (e, _g) = make();
    fill(&e, &[b"a", b"b", b"c"]);
    for r in [
        range(Bound::Included(b"c"), Bound::Excluded(b"a")),
        range(Bound::Included(b"b"), Bound::Excluded(b"b")),
        range(Bound::Excluded(b"b"), Bound::Included(b"b")),
        range(Bound::Included(b"x"), Bound::Unbounded),
    ] {
        assert!(keys_of(&e, Cf::Data, &r, false).is_empty(), "{r:?}");
        assert!(keys_of(&e, Cf::Data, &r, true).is_empty(), "{r:?}");
    }
}

/// A snapshot sees neither later puts nor later deletes, for gets and scans.
pub fn snapshot_is_isolated<E: Engine, G>(make: impl Fn() -> (E, G)) {
    let (e, _g) = make();
    fill(&e, &[b"a", b"b"]);
    let snap = e.snapshot();
    let mut b = WriteBatch::new();
    b.put(Cf::Data, &b"c"[..], &b"new"[..]);
    b.put(Cf::Data, &b"a"[..], &b"changed"[..]);
    b.delete(Cf::Data, &b"b"[..]);
    e.write(&b, false).unwrap();
    assert_eq!(snap.get(Cf::Data, b"a").unwrap().unwrap(), b"v-a");
    assert_eq!(snap.get(Cf::Data, b"c").unwrap(), None);
    assert_eq!(strs(keys_of(&snap, Cf::Data, &KeyRange::all(), false)), vec!["a", "b"]);
    assert_eq!(strs(keys_of(&e, Cf::Data, &KeyRange::all(), false)), vec!["a", "c"]);
}

/// An iterator reads the state as of its creation, whatever is written while it runs.
pub fn scan_does_not_see_later_writes<E: Engine, G>(make: impl Fn() -> (E, G)) {
    let (e, _g) = make();
    fill(&e, &[b"a", b"c", b"e"]);
    let mut it = e.scan(Cf::Data, &KeyRange::all(), false).unwrap();
    assert_eq!(it.next().unwrap().unwrap().0, b"a");
    fill(&e, &[b"b", b"d", b"f"]);
    let mut b = WriteBatch::new();
    b.delete(Cf::Data, &b"e"[..]);
    e.write(&b, false).unwrap();
    let rest: Vec<_> = it.map(|p| p.unwrap().0).collect();
    assert_eq!(strs(rest), vec!["c", "e"]);
}

/// Keys may hold any bytes (0x00, 0xff), values may be empty.
pub fn binary_keys_and_empty_values<E: Engine, G>(make: impl Fn() -> (E, G)) {
    let (e, _g) = make();
    let keys: [&[u8]; 5] = [b"\x00", b"\x00\x00", b"\x00\xff", b"\xff", b"\xff\xff\xff"];
    let mut b = WriteBatch::new();
    for k in keys {
        b.put(Cf::Data, k, &b""[..]);
    }
    e.write(&b, false).unwrap();
    assert_eq!(e.get(Cf::Data, b"\xff").unwrap(), Some(vec![]));
    let got = keys_of(&e, Cf::Data, &KeyRange::all(), false);
    assert_eq!(got, keys.iter().map(|k| k.to_vec()).collect::<Vec<_>>());
    let tail = keys_of(&e, Cf::Data, &KeyRange::prefix(b"\xff"), true);
    assert_eq!(tail, vec![b"\xff\xff\xff".to_vec(), b"\xff".to_vec()]);
}

/// Exporting spans of a snapshot and importing them elsewhere reproduces exactly those spans.
pub fn export_import_round_trip<E: Engine, G>(make: impl Fn() -> (E, G)) {
    let (src, _g1) = make();
    let (dst, _g2) = make();
    let mut b = WriteBatch::new();
    for i in 0..3000u32 {
        b.put(Cf::Data, format!("k{i:05}").into_bytes(), vec![(i % 251) as u8; 700]);
    }
    b.put(Cf::RaftMeta, &b"meta"[..], &b"m"[..]);
    b.put(Cf::RaftMeta, &b"other"[..], &b"o"[..]);
    src.write(&b, false).unwrap();
    let spans =
        [(Cf::Data, KeyRange::half_open("k00100", "k02100")), (Cf::RaftMeta, KeyRange::prefix(b"meta"))];
    let mut stream = Vec::new();
    let out = export(&src.snapshot(), &spans, &mut stream).unwrap();
    assert_eq!(out.records, 2001);
    assert_eq!(out.bytes, stream.len() as u64);
    let mut batch = WriteBatch::new();
    let got = import(&mut stream.as_slice(), &spans, |cf, k, v| {
        batch.put(cf, k, v);
        Ok(())
    })
    .unwrap();
    assert_eq!(got, out);
    dst.write(&batch, true).unwrap();
    assert_eq!(keys_of(&dst, Cf::Data, &KeyRange::all(), false).len(), 2000);
    assert_eq!(dst.get(Cf::Data, b"k00100").unwrap().unwrap(), vec![100u8; 700]);
    assert_eq!(dst.get(Cf::Data, b"k02100").unwrap(), None);
    assert_eq!(dst.get(Cf::RaftMeta, b"meta").unwrap().unwrap(), b"m");
    assert_eq!(dst.get(Cf::RaftMeta, b"other").unwrap(), None);
}

/// A flipped bit or a truncation anywhere in an exported stream is reported as corruption.
pub fn export_detects_corruption<E: Engine, G>(make: impl Fn() -> (E, G)) {
    let (src, _g) = make();
    fill(&src, &[b"a", b"b", b"c"]);
    let spans = [(Cf::Data, KeyRange::all())];
    let mut stream = Vec::new();
    export(&src.snapshot(), &spans, &mut stream).unwrap();
    for i in 0..stream.len() {
        let mut bad = stream.clone();
        bad[i] ^= 0x40;
        let r = import(&mut bad.as_slice(), &spans, |_, _, _| Ok(()));
        assert!(r.as_ref().is_err_and(|e| e.is_corruption()), "flip at byte {i}: {r:?}");
    }
    for cut in 0..stream.len() {
        let r = import(&mut &stream[..cut], &spans, |_, _, _| Ok(()));
        assert!(r.as_ref().is_err_and(|e| e.is_corruption()), "cut at byte {cut}: {r:?}");
    }
    let narrower = [(Cf::Data, KeyRange::half_open("a", "b"))];
    assert!(import(&mut stream.as_slice(), &narrower, |_, _, _| Ok(())).is_err());
}

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    DeleteRange(Vec<u8>, Vec<u8>),
}

fn small_key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0x7f), Just(0xff)], 0..4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (small_key(), prop::collection::vec(any::<u8>(), 0..8)).prop_map(|(k, v)| Op::Put(k, v)),
        2 => small_key().prop_map(Op::Delete),
        1 => (small_key(), small_key()).prop_map(|(a, b)| Op::DeleteRange(a, b)),
    ]
}

fn bound() -> impl Strategy<Value = Bound<Vec<u8>>> {
    prop_oneof![
        Just(Bound::Unbounded),
        small_key().prop_map(Bound::Included),
        small_key().prop_map(Bound::Excluded),
    ]
}

/// Random batches of puts, deletes and range deletes, checked after every batch against a
/// `BTreeMap` model with point gets and random forward and reverse scans.
pub fn model_check<E: Engine, G>(make: impl Fn() -> (E, G)) {
    let config = ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() };
    let strategy = (
        prop::collection::vec(prop::collection::vec(op(), 1..6), 1..12),
        prop::collection::vec((bound(), bound(), any::<bool>()), 4),
    );
    proptest!(config, |((batches, scans) in strategy)| {
        let (e, _g) = make();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for ops in batches {
            let mut b = WriteBatch::new();
            for op in ops {
                match op {
                    Op::Put(k, v) => { model.insert(k.clone(), v.clone()); b.put(Cf::Data, k, v); }
                    Op::Delete(k) => { model.remove(&k); b.delete(Cf::Data, k); }
                    Op::DeleteRange(s, t) => {
                        if s < t {
                            model.retain(|k, _| !(k >= &s && k < &t));
                        }
                        b.delete_range(Cf::Data, s, t);
                    }
                }
            }
            e.write(&b, false).unwrap();
            for (k, v) in &model {
                let got = e.get(Cf::Data, k).unwrap();
                prop_assert_eq!(got.as_ref(), Some(v));
            }
            for (start, end, reverse) in &scans {
                let r = KeyRange { start: start.clone(), end: end.clone() };
                let mut want: Vec<(Vec<u8>, Vec<u8>)> = model
                    .iter()
                    .filter(|(k, _)| r.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if *reverse {
                    want.reverse();
                }
                let got: Vec<_> = e.scan(Cf::Data, &r, *reverse).unwrap().map(|p| p.unwrap()).collect();
                prop_assert_eq!(got, want, "scan {:?} reverse={}", r, reverse);
            }
        }
    });
}
