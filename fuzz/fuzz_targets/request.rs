//! Every gRPC request type from arbitrary bytes: protobuf decoding must return a message or an
//! error, never panic, and whatever decodes must survive a re-encode unchanged. (The node's
//! handlers behind these decoders are fuzzed on stable by `zonekv-server/tests/fuzz_requests.rs`,
//! which sends the same kind of bytes to a running node.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use zonekv_proto::admin::v1 as admin;
use zonekv_proto::kv::v1 as kv;
use zonekv_proto::raft::v1 as raft;

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(m) = M::decode(data) {
        let again = M::decode(m.encode_to_vec().as_slice()).expect("a re-encoded message decodes");
        assert_eq!(again, m);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<kv::GetRequest>(data);
    round_trip::<kv::PutRequest>(data);
    round_trip::<kv::DeleteRequest>(data);
    round_trip::<kv::ScanRequest>(data);
    round_trip::<kv::CompareAndSwapRequest>(data);
    round_trip::<kv::BatchRequest>(data);
    round_trip::<kv::StreamRequest>(data);
    round_trip::<admin::InitializeRequest>(data);
    round_trip::<admin::AddNodeRequest>(data);
    round_trip::<admin::RemoveNodeRequest>(data);
    round_trip::<admin::TransferLeaderRequest>(data);
    round_trip::<raft::AppendEntriesRequest>(data);
    round_trip::<raft::VoteRequest>(data);
    round_trip::<raft::SnapshotChunk>(data);
    round_trip::<raft::TransferLeaderRequest>(data);
    // The internal RPCs between nodes' control planes, and the rest of the admin API.
    round_trip::<raft::RaftBatch>(data);
    round_trip::<raft::Op>(data);
    round_trip::<raft::PingRequest>(data);
    round_trip::<raft::CreateReplicaRequest>(data);
    round_trip::<raft::PlaceRequest>(data);
    round_trip::<raft::IsMemberRequest>(data);
    round_trip::<admin::StatusRequest>(data);
    round_trip::<admin::SplitRequest>(data);
    round_trip::<admin::MoveReplicaRequest>(data);
    round_trip::<admin::DecommissionRequest>(data);
    round_trip::<admin::SetPolicyRequest>(data);
    round_trip::<admin::ListPoliciesRequest>(data);
    round_trip::<admin::GrantRequest>(data);
    round_trip::<admin::ListGrantsRequest>(data);
});
