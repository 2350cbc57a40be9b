//! What the clients talk to: an in-process cluster through node handles, or a cluster of
//! `zonekv` processes through the gRPC client. Both answer in the terms the history needs.

use async_trait::async_trait;
use bytes::Bytes;
use rand::rngs::StdRng;

use crate::history::Status;

/// The key-value operations the workloads use. An error is [`Status::Fail`] when the cluster
/// said the operation did nothing, [`Status::Unknown`] when it may have taken effect.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Linearizable read.
    async fn get(&self, rng: &mut StdRng, key: &Bytes) -> Result<Option<Bytes>, Status>;
    /// Write.
    async fn put(&self, rng: &mut StdRng, key: &Bytes, value: Bytes) -> Result<(), Status>;
    /// Compare-and-swap; `Ok(true)` if it swapped.
    async fn cas(
        &self,
        rng: &mut StdRng,
        key: &Bytes,
        expected: Option<Bytes>,
        new_value: Bytes,
    ) -> Result<bool, Status>;
    /// Stops every node; the run is over.
    async fn shutdown(&self);
}
