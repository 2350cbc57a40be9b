//! The systems under test, behind one small interface.

mod etcd;
mod postgres;
mod zonekv;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use async_trait::async_trait;

/// One connection to a target, shared by several client tasks.
#[async_trait]
pub trait Conn: Send + Sync {
    /// Writes `key` (durably, as the target defines it).
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<()>;
    /// Reads `key` linearizably (or the target's strongest read).
    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Reads up to `limit` pairs from `start` on; returns how many.
    async fn scan(&self, start: &[u8], limit: usize) -> Result<usize>;
}

/// A running target.
#[async_trait]
pub trait Target: Send + Sync {
    /// Opens a connection.
    async fn connect(&self) -> Result<Arc<dyn Conn>>;
    /// Version string of the server.
    fn version(&self) -> String;
    /// Stops what the harness started (servers, embedded nodes) and releases their data.
    async fn shutdown(self: Box<Self>);
}

/// Which system, started by the harness or reached at endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// A 3-node ZoneKV cluster inside the harness process, used through the embedding API.
    ZonekvEmbedded,
    /// A 3-node cluster of `zonekv` processes over gRPC, with mutual TLS; `None` starts one
    /// (endpoints: an existing cluster started `--insecure`).
    Zonekv(Option<Vec<String>>),
    /// The same cluster started `--insecure` (no TLS): what TLS costs, interleaved with
    /// `zonekv` in one run.
    ZonekvInsecure,
    /// A 3-member etcd cluster; `None` starts one.
    Etcd(Option<Vec<String>>),
    /// PostgreSQL; `None` starts a local server. Otherwise a connection string.
    Postgres(Option<String>),
}

impl TargetSpec {
    /// Parses `name` or `name=endpoint[,endpoint…]` (PostgreSQL: `postgres=<connection string>`).
    pub fn parse(s: &str) -> Result<Self> {
        let (name, endpoints) = match s.split_once('=') {
            Some((n, e)) => (n, Some(e)),
            None => (s, None),
        };
        let list = |e: &str| e.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect();
        Ok(match (name, endpoints) {
            ("zonekv-embedded", None) => TargetSpec::ZonekvEmbedded,
            ("zonekv", e) => TargetSpec::Zonekv(e.map(list)),
            ("zonekv-insecure", None) => TargetSpec::ZonekvInsecure,
            ("etcd", e) => TargetSpec::Etcd(e.map(list)),
            ("postgres", e) => TargetSpec::Postgres(e.map(str::to_string)),
            _ => bail!(
                "unknown target {s:?}: zonekv-embedded, zonekv[=ADDR,...], zonekv-insecure, etcd[=URL,...], postgres[=CONNSTR]"
            ),
        })
    }

    /// Parses a comma-separated list of targets, where a target's own endpoints are
    /// comma-separated too: `zonekv=A,B,C,etcd=D,E,postgres` is three targets. A piece that does
    /// not start with a target name continues the endpoint list of the target before it.
    pub fn parse_list(s: &str) -> Result<Vec<Self>> {
        const NAMES: [&str; 5] = ["zonekv-embedded", "zonekv-insecure", "zonekv", "etcd", "postgres"];
        let starts_target = |p: &str| NAMES.iter().any(|n| p == *n || p.starts_with(&format!("{n}=")));
        let mut specs: Vec<String> = Vec::new();
        for piece in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match specs.last_mut() {
                Some(last) if !starts_target(piece) => {
                    last.push(',');
                    last.push_str(piece);
                }
                _ => specs.push(piece.to_string()),
            }
        }
        specs.iter().map(|t| Self::parse(t)).collect()
    }

    /// The short name used in tables and files.
    pub fn name(&self) -> &'static str {
        match self {
            TargetSpec::ZonekvEmbedded => "zonekv-embedded",
            TargetSpec::Zonekv(_) => "zonekv",
            TargetSpec::ZonekvInsecure => "zonekv-insecure",
            TargetSpec::Etcd(_) => "etcd",
            TargetSpec::Postgres(_) => "postgres",
        }
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where started targets keep their data and logs, and which binaries they use.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Parent directory for data and logs (a temporary directory if `None`).
    pub work_dir: Option<PathBuf>,
    /// The `zonekv` binary (default: next to `zonekv-bench`, then `PATH`).
    pub zonekv_bin: Option<PathBuf>,
    /// A node config file for the `zonekv` target's processes.
    pub zonekv_config: Option<PathBuf>,
}

/// Starts (or connects to) a target.
pub async fn start(spec: &TargetSpec, opts: &StartOptions) -> Result<Box<dyn Target>> {
    let dir = match &opts.work_dir {
        Some(d) => {
            let d = d.join(spec.name());
            std::fs::create_dir_all(&d)?;
            WorkDir::Kept(d)
        }
        None => WorkDir::Temp(
            tempfile::Builder::new().prefix(&format!("zonekv-bench-{}-", spec.name())).tempdir()?,
        ),
    };
    Ok(match spec {
        TargetSpec::ZonekvEmbedded => Box::new(zonekv::Embedded::start(dir).await?),
        TargetSpec::Zonekv(None) => Box::new(
            zonekv::Processes::start(dir, opts.zonekv_bin.as_deref(), opts.zonekv_config.as_deref(), false)
                .await?,
        ),
        TargetSpec::ZonekvInsecure => Box::new(
            zonekv::Processes::start(dir, opts.zonekv_bin.as_deref(), opts.zonekv_config.as_deref(), true)
                .await?,
        ),
        TargetSpec::Zonekv(Some(eps)) => Box::new(zonekv::Processes::connect(eps.clone())),
        TargetSpec::Etcd(None) => Box::new(etcd::Etcd::start(dir).await?),
        TargetSpec::Etcd(Some(eps)) => Box::new(etcd::Etcd::connect(eps.clone()).await?),
        TargetSpec::Postgres(None) => Box::new(postgres::Postgres::start(dir).await?),
        TargetSpec::Postgres(Some(url)) => Box::new(postgres::Postgres::connect(url.clone()).await?),
    })
}

/// A target's directory: kept (given by the user) or temporary (removed on drop).
pub enum WorkDir {
    /// Kept after the run.
    Kept(PathBuf),
    /// Removed when the target stops.
    Temp(tempfile::TempDir),
}

impl WorkDir {
    /// The path.
    pub fn path(&self) -> &std::path::Path {
        match self {
            WorkDir::Kept(p) => p,
            WorkDir::Temp(t) => t.path(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_specs_parse() {
        assert_eq!(TargetSpec::parse("zonekv").unwrap(), TargetSpec::Zonekv(None));
        assert_eq!(
            TargetSpec::parse("etcd=http://a:1, http://b:2").unwrap(),
            TargetSpec::Etcd(Some(vec!["http://a:1".into(), "http://b:2".into()]))
        );
        assert_eq!(
            TargetSpec::parse("postgres=host=/tmp user=x").unwrap(),
            TargetSpec::Postgres(Some("host=/tmp user=x".into()))
        );
        assert!(TargetSpec::parse("redis").is_err());
        let list =
            TargetSpec::parse_list("zonekv=127.0.0.1:1,127.0.0.1:2,etcd,postgres=host=/tmp user=x").unwrap();
        assert_eq!(
            list,
            vec![
                TargetSpec::Zonekv(Some(vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()])),
                TargetSpec::Etcd(None),
                TargetSpec::Postgres(Some("host=/tmp user=x".into())),
            ]
        );
        assert!(TargetSpec::parse_list("127.0.0.1:1,zonekv").is_err(), "an endpoint needs a target");
    }
}
