//! `zonekv.kv.v1.Kv`.

use std::ops::Bound;

use tonic::{Request, Response, Status};
use zonekv_proto::kv::v1 as pb;
use zonekv_proto::kv::v1::kv_server::Kv;
use zonekv_raft::Mutation;

use crate::NodeHandle;
use crate::kv::Scan;
use crate::node::FIRST_RANGE;
use crate::{Error, ReadConsistency};

pub(crate) struct KvService {
    pub(crate) node: NodeHandle,
}

impl KvService {
    fn header(&self, index: u64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            node_id: self.node.id(),
            range_id: FIRST_RANGE,
            index,
        })
    }
}

fn consistency(c: i32) -> Result<ReadConsistency, Status> {
    match pb::ReadConsistency::try_from(c) {
        Ok(pb::ReadConsistency::Linearizable) => Ok(ReadConsistency::Linearizable),
        Ok(pb::ReadConsistency::Stale) => Ok(ReadConsistency::Stale),
        Err(_) => Err(Error::InvalidArgument(format!("unknown read consistency {c}")).into()),
    }
}

fn bound(b: Option<pb::Bound>) -> Bound<bytes::Bytes> {
    match b {
        None => Bound::Unbounded,
        Some(pb::Bound { key, inclusive: true }) => Bound::Included(key),
        Some(pb::Bound {
            key,
            inclusive: false,
        }) => Bound::Excluded(key),
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let req = req.into_inner();
        let (value, index) = self.node.get(&req.key, consistency(req.consistency)?).await?;
        Ok(Response::new(pb::GetResponse {
            header: self.header(index),
            value,
        }))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let req = req.into_inner();
        let index = self.node.put(req.key, req.value).await?;
        Ok(Response::new(pb::PutResponse {
            header: self.header(index),
        }))
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let (existed, index) = self.node.delete(req.into_inner().key).await?;
        Ok(Response::new(pb::DeleteResponse {
            header: self.header(index),
            existed,
        }))
    }

    async fn scan(&self, req: Request<pb::ScanRequest>) -> Result<Response<pb::ScanResponse>, Status> {
        let req = req.into_inner();
        let scan = Scan {
            start: bound(req.start),
            end: bound(req.end),
            limit: req.limit,
            reverse: req.reverse,
            keys_only: req.keys_only,
            consistency: consistency(req.consistency)?,
        };
        let page = self.node.scan(&scan).await?;
        Ok(Response::new(pb::ScanResponse {
            header: self.header(page.index),
            kvs: page
                .pairs
                .into_iter()
                .map(|(key, value)| pb::KeyValue { key, value })
                .collect(),
            more: page.more,
        }))
    }

    async fn compare_and_swap(
        &self,
        req: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        let req = req.into_inner();
        let out = self
            .node
            .compare_and_swap(req.key, req.expected, req.new_value)
            .await?;
        Ok(Response::new(pb::CompareAndSwapResponse {
            header: self.header(out.index),
            succeeded: out.succeeded,
            current: out.current,
        }))
    }

    async fn batch(&self, req: Request<pb::BatchRequest>) -> Result<Response<pb::BatchResponse>, Status> {
        let mut mutations = Vec::new();
        for (i, m) in req.into_inner().mutations.into_iter().enumerate() {
            mutations.push(match m.op {
                Some(pb::mutation::Op::Put(p)) => Mutation::Put {
                    key: p.key,
                    value: p.value,
                },
                Some(pb::mutation::Op::Delete(d)) => Mutation::Delete { key: d.key },
                None => return Err(Error::InvalidArgument(format!("mutation {i} has no operation")).into()),
            });
        }
        let index = self.node.batch(mutations).await?;
        Ok(Response::new(pb::BatchResponse {
            header: self.header(index),
        }))
    }
}
