//! The state machine against a model: random commands (puts, deletes, compare-and-swaps,
//! batches; several ops per entry, so later ops see earlier ones of the same entry), applied
//! in random-sized groups of entries, with reopens in between, must leave exactly the state a
//! `BTreeMap` reaches, with the applied log id of the last entry.

use std::collections::BTreeMap;

use bytes::Bytes;
use openraft::EntryPayload;
use openraft::storage::RaftStateMachine;
use proptest::prelude::*;
use zonekv_engine::MemEngine;
use zonekv_raft::{
    Command, Entry, LeaderId, LogId, Mutation, Op, RangeId, ReplicaId, StateMachine, read_user_value,
};

fn key() -> impl Strategy<Value = Bytes> {
    (0u8..6).prop_map(|k| Bytes::from(vec![b'k', k]))
}

fn value() -> impl Strategy<Value = Bytes> {
    (0u8..4).prop_map(|v| Bytes::from(vec![b'v', v]))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (key(), value()).prop_map(|(key, value)| Op::Put { key, value }),
        key().prop_map(|key| Op::Delete { key }),
        (key(), proptest::option::of(value()), proptest::option::of(value()))
            .prop_map(|(key, expected, new_value)| Op::CompareAndSwap { key, expected, new_value }),
        proptest::collection::vec(
            prop_oneof![
                (key(), value()).prop_map(|(key, value)| Mutation::Put { key, value }),
                key().prop_map(|key| Mutation::Delete { key }),
            ],
            1..4
        )
        .prop_map(Op::Batch),
    ]
}

/// The model: what each op does to a map.
fn model_apply(m: &mut BTreeMap<Bytes, Bytes>, op: &Op) {
    match op {
        Op::Put { key, value } => {
            m.insert(key.clone(), value.clone());
        }
        Op::Delete { key } => {
            m.remove(key);
        }
        Op::CompareAndSwap { key, expected, new_value } => {
            if m.get(key) == expected.as_ref() {
                match new_value {
                    Some(v) => m.insert(key.clone(), v.clone()),
                    None => m.remove(key),
                };
            }
        }
        Op::Batch(ms) => {
            for mu in ms {
                match mu {
                    Mutation::Put { key, value } => m.insert(key.clone(), value.clone()),
                    Mutation::Delete { key } => m.remove(key),
                };
            }
        }
        Op::Split(_) | Op::AllocateIds { .. } | Op::UpdateDirectory(_) | Op::SetPlacement { .. } => {
            unreachable!(
                "the generator makes no admin ops (tests/split.rs and tests/directory.rs cover them)"
            )
        }
    }
}

fn entry(index: u64, ops: Vec<Op>) -> Entry {
    Entry {
        log_id: LogId::new(LeaderId { term: 1, node_id: ReplicaId::new(1) }, index),
        payload: EntryPayload::Normal(Command { ops }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn applying_commands_matches_the_model(
        entries in proptest::collection::vec(proptest::collection::vec(op(), 1..5), 1..40),
        groups in proptest::collection::vec(1usize..6, 1..40),
        reopen_after in proptest::collection::vec(any::<bool>(), 1..40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let engine = MemEngine::new();
        let mut model = BTreeMap::new();
        let mut sm = StateMachine::open(engine.clone(), RangeId::new(1)).unwrap();
        let mut next = 0usize;
        let mut g = 0usize;
        while next < entries.len() {
            let n = groups[g % groups.len()].min(entries.len() - next);
            let batch: Vec<_> = (next..next + n).map(|i| Ok((entry(i as u64 + 1, entries[i].clone()), None))).collect();
            rt.block_on(sm.apply(futures::stream::iter(batch))).unwrap();
            for ops in &entries[next..next + n] {
                ops.iter().for_each(|op| model_apply(&mut model, op));
            }
            next += n;
            if reopen_after[g % reopen_after.len()] {
                sm = StateMachine::open(engine.clone(), RangeId::new(1)).unwrap();
            }
            g += 1;
            let (applied, _) = rt.block_on(sm.applied_state()).unwrap();
            prop_assert_eq!(applied.map(|id| id.index), Some(next as u64));
            for k in 0u8..6 {
                let key = [b'k', k];
                let got = read_user_value(&engine, RangeId::new(1), &key).unwrap();
                prop_assert_eq!(got.as_ref(), model.get(&key[..]), "key {:?} after entry {}", key, next);
            }
        }
    }
}
