//! openraft's own storage conformance suite, on both engines.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use tempfile::TempDir;
use zonekv_engine::{Engine, MemEngine};
use zonekv_engine_rocks::{RocksEngine, RocksOptions};
use zonekv_raft::{LogStore, LogSyncer, RangeId, StateMachine, TypeConfig};

const GROUP: RangeId = RangeId::new(7);

fn stores<E: Engine>(engine: E) -> (LogStore<E>, StateMachine<E>) {
    let syncer = LogSyncer::start(engine.clone());
    let log = LogStore::new(engine.clone(), GROUP, syncer);
    let sm = StateMachine::open(engine, GROUP).expect("open state machine");
    (log, sm)
}

struct MemBuilder;

impl StoreBuilder<TypeConfig, LogStore<MemEngine>, StateMachine<MemEngine>, ()> for MemBuilder {
    async fn build(
        &self,
    ) -> Result<((), LogStore<MemEngine>, StateMachine<MemEngine>), StorageError<TypeConfig>> {
        let (log, sm) = stores(MemEngine::new());
        Ok(((), log, sm))
    }
}

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore<RocksEngine>, StateMachine<RocksEngine>, TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore<RocksEngine>, StateMachine<RocksEngine>), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = RocksEngine::open(dir.path(), &RocksOptions::default()).expect("open rocksdb");
        let (log, sm) = stores(engine);
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite_on_the_memory_engine() -> Result<(), StorageError<TypeConfig>> {
    Suite::<TypeConfig, LogStore<MemEngine>, StateMachine<MemEngine>, MemBuilder, ()>::test_all(MemBuilder)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_suite_on_the_rocksdb_engine() -> Result<(), StorageError<TypeConfig>> {
    Suite::<TypeConfig, LogStore<RocksEngine>, StateMachine<RocksEngine>, RocksBuilder, TempDir>::test_all(
        RocksBuilder,
    )
    .await
}
