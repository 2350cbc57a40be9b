//! Raft transport messages from arbitrary bytes: decoding and conversion to openraft types
//! must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use zonekv_proto::raft::v1 as pb;
use zonekv_raft::codec;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = pb::AppendEntriesRequest::decode(data) {
        let _ = codec::append_request_from_pb(m);
    }
    if let Ok(m) = pb::VoteRequest::decode(data) {
        let _ = codec::vote_request_from_pb(m);
    }
    if let Ok(m) = pb::SnapshotMeta::decode(data) {
        let _ = codec::snapshot_meta_from_pb(m);
    }
});
