//! Workloads: the operation mix and the keys it touches.

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};
use rand::Rng;
use serde::Serialize;

use crate::zipf::Zipf;

/// The operation mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// 100 % put of new or existing keys.
    Write,
    /// 100 % linearizable get of loaded keys.
    Read,
    /// YCSB-A: 50 % read, 50 % update.
    YcsbA,
    /// YCSB-B: 95 % read, 5 % update.
    YcsbB,
    /// Short range scans (see [`Spec::scan_len`]).
    Scan,
}

impl Workload {
    /// Every workload, in the order the smoke test runs them.
    pub const ALL: [Workload; 5] =
        [Workload::Write, Workload::Read, Workload::YcsbA, Workload::YcsbB, Workload::Scan];

    /// Whether the keyspace must be loaded before measuring.
    pub fn needs_load(self) -> bool {
        self != Workload::Write
    }

    /// Fraction of operations that are reads.
    fn read_fraction(self) -> f64 {
        match self {
            Workload::Write => 0.0,
            Workload::Read | Workload::Scan => 1.0,
            Workload::YcsbA => 0.5,
            Workload::YcsbB => 0.95,
        }
    }
}

impl FromStr for Workload {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "write" => Workload::Write,
            "read" => Workload::Read,
            "ycsb-a" => Workload::YcsbA,
            "ycsb-b" => Workload::YcsbB,
            "scan" => Workload::Scan,
            other => bail!("unknown workload {other:?} (write, read, ycsb-a, ycsb-b, scan)"),
        })
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::Write => "write",
            Workload::Read => "read",
            Workload::YcsbA => "ycsb-a",
            Workload::YcsbB => "ycsb-b",
            Workload::Scan => "scan",
        })
    }
}

/// How keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// YCSB's zipfian with theta 0.99.
    Zipfian,
}

impl FromStr for KeyDist {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "uniform" => Ok(KeyDist::Uniform),
            "zipfian" => Ok(KeyDist::Zipfian),
            other => bail!("unknown key distribution {other:?} (uniform, zipfian)"),
        }
    }
}

/// A complete workload description.
#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    /// The operation mix.
    pub workload: Workload,
    /// Keys in the keyspace.
    pub keys: u64,
    /// Bytes per key (at least 8).
    pub key_size: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Key distribution.
    pub dist: KeyDist,
    /// Keys per scan.
    pub scan_len: usize,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            workload: Workload::Write,
            keys: 100_000,
            key_size: 16,
            value_size: 256,
            dist: KeyDist::Uniform,
            scan_len: 10,
        }
    }
}

/// One operation to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Write `key`.
    Put(Vec<u8>),
    /// Read `key`.
    Get(Vec<u8>),
    /// Scan from `key`.
    Scan(Vec<u8>),
}

/// Generates operations for one client.
pub struct OpGen {
    spec: Spec,
    zipf: Option<Zipf>,
}

impl OpGen {
    /// A generator for `spec`.
    pub fn new(spec: &Spec) -> Self {
        let zipf = (spec.dist == KeyDist::Zipfian).then(|| Zipf::new(spec.keys, 0.99));
        Self { spec: spec.clone(), zipf }
    }

    /// The key with index `i`: fixed width, so keys sort by index.
    pub fn key(&self, i: u64) -> Vec<u8> {
        key(&self.spec, i)
    }

    /// The next operation.
    pub fn next<R: Rng>(&self, rng: &mut R) -> Op {
        let i = match &self.zipf {
            Some(z) => z.sample(rng),
            None => rng.random_range(0..self.spec.keys),
        };
        let k = self.key(i);
        match self.spec.workload {
            Workload::Scan => Op::Scan(k),
            w if rng.random::<f64>() < w.read_fraction() => Op::Get(k),
            _ => Op::Put(k),
        }
    }
}

/// The key with index `i` for `spec`: `k` followed by the zero-padded index.
pub fn key(spec: &Spec, i: u64) -> Vec<u8> {
    let width = spec.key_size.max(8) - 1;
    format!("k{i:0width$}").into_bytes()
}

/// A value of the configured size.
pub fn value(spec: &Spec, seed: u64) -> Vec<u8> {
    let mut v = vec![b'v'; spec.value_size];
    for (b, x) in v.iter_mut().zip(seed.to_le_bytes()) {
        *b = b'a' + x % 26;
    }
    v
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn mixes_match_their_definition() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for (w, reads) in
            [(Workload::Write, 0.0), (Workload::YcsbA, 0.5), (Workload::YcsbB, 0.95), (Workload::Read, 1.0)]
        {
            let g = OpGen::new(&Spec { workload: w, ..Spec::default() });
            let n = 20_000;
            let got = (0..n).filter(|_| matches!(g.next(&mut rng), Op::Get(_))).count() as f64 / n as f64;
            assert!((got - reads).abs() < 0.02, "{w}: {got} reads");
        }
        let g = OpGen::new(&Spec { workload: Workload::Scan, ..Spec::default() });
        assert!(matches!(g.next(&mut rng), Op::Scan(_)));
    }

    #[test]
    fn keys_have_the_configured_width_and_sort_by_index() {
        let spec = Spec { key_size: 12, ..Spec::default() };
        assert_eq!(key(&spec, 42), b"k00000000042".to_vec());
        assert!(key(&spec, 9) < key(&spec, 10));
        assert_eq!(value(&spec, 3).len(), 256);
    }
}
