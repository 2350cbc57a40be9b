//! PostgreSQL: a local server of the Debian package (single node, not replicated), with
//! `synchronous_commit = on`, and a `kv(key bytea primary key, value bytea)` table.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use tokio_postgres::{NoTls, Statement};

use super::{Conn, Target, WorkDir};
use crate::procs::{Proc, find_binary, free_port, wait_for_port};

/// A PostgreSQL server (started here or external) and the connection string to reach it.
pub struct Postgres {
    url: String,
    version: String,
    server: Option<Proc>,
    _dir: Option<WorkDir>,
}

/// The newest installed server directory, e.g. `/usr/lib/postgresql/15/bin`.
fn server_dirs() -> Vec<String> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.into_iter().rev().map(|d| d.display().to_string()).collect()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// The uid and gid of the `postgres` user.
fn postgres_ids() -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().context("running id")?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .context("no `postgres` user (apt-get install postgresql)")
    };
    Ok((id("-u")?, id("-g")?))
}

/// A command run as the `postgres` user when we are root (PostgreSQL refuses to run as root).
/// The server is our direct child (no `runuser` in between), so stopping it reaches it.
fn pg_command(bin: &PathBuf, as_postgres: Option<(u32, u32)>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(bin);
    if let Some((uid, gid)) = as_postgres {
        c.uid(uid).gid(gid);
    }
    c
}

impl Drop for Postgres {
    /// A fast shutdown (SIGINT), so the server's own processes go too; SIGKILL if it hangs.
    fn drop(&mut self) {
        if let Some(server) = &mut self.server {
            server.stop("INT", Duration::from_secs(10));
        }
    }
}

impl Postgres {
    /// Initialises a fresh cluster in the work directory and starts it on a loopback port.
    pub async fn start(dir: WorkDir) -> Result<Self> {
        let extra: Vec<String> = server_dirs();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let initdb = find_binary("initdb", None, &extra, "apt-get install postgresql")?;
        let postgres = find_binary("postgres", None, &extra, "apt-get install postgresql")?;
        let version = Command::new(&postgres)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())?;
        let root = is_root();
        let as_postgres = if root { Some(postgres_ids()?) } else { None };
        let data = dir.path().join("pgdata");
        if root {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status()?;
            if !status.success() {
                bail!("cannot give {} to the postgres user", dir.path().display());
            }
        }
        let out = pg_command(&initdb, as_postgres)
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-instructions"])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let port = free_port()?;
        let mut cmd = pg_command(&postgres, as_postgres);
        cmd.arg("-D").arg(&data).args(["-p", &port.to_string(), "-k"]).arg(dir.path()).args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "synchronous_commit=on",
            "-c",
            "fsync=on",
            "-c",
            "max_connections=1100",
            "-c",
            "shared_buffers=256MB",
        ]);
        let mut server = Proc::spawn("postgres", cmd, &dir.path().join("postgres.log"))?;
        wait_for_port(
            &format!("127.0.0.1:{port}"),
            std::slice::from_mut(&mut server),
            Duration::from_secs(30),
        )
        .await?;
        let url = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
        prepare_schema(&url).await?;
        Ok(Self { url, version, server: Some(server), _dir: Some(dir) })
    }

    /// Uses an existing server; creates the table if missing.
    pub async fn connect(url: String) -> Result<Self> {
        prepare_schema(&url).await?;
        Ok(Self { url, version: "postgres (external)".into(), server: None, _dir: None })
    }
}

async fn open(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) =
        tokio_postgres::connect(url, NoTls).await.with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}

async fn prepare_schema(url: &str) -> Result<()> {
    // A server that just opened its port may still refuse sessions ("the database system is
    // starting up"): retry connection and statement for a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let client = open(url).await?;
            client
                .batch_execute("CREATE TABLE IF NOT EXISTS kv (key bytea PRIMARY KEY, value bytea NOT NULL)")
                .await
                .context("creating the kv table")
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %format!("{e:#}"), "postgres not ready yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.context("postgres did not accept sessions within 30 s")),
        }
    }
}

struct PgConn {
    client: tokio_postgres::Client,
    put: Statement,
    get: Statement,
    scan: Statement,
}

#[async_trait]
impl Conn for PgConn {
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.client.execute(&self.put, &[&key, &value]).await?;
        Ok(())
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let row = self.client.query_opt(&self.get, &[&key]).await?;
        Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
    }

    async fn scan(&self, start: &[u8], limit: usize) -> Result<usize> {
        Ok(self.client.query(&self.scan, &[&start, &(limit as i64)]).await?.len())
    }
}

#[async_trait]
impl Target for Postgres {
    async fn connect(&self) -> Result<Arc<dyn Conn>> {
        let client = open(&self.url).await?;
        let put = client
            .prepare("INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value")
            .await?;
        let get = client.prepare("SELECT value FROM kv WHERE key = $1").await?;
        let scan = client.prepare("SELECT key, value FROM kv WHERE key >= $1 ORDER BY key LIMIT $2").await?;
        Ok(Arc::new(PgConn { client, put, get, scan }))
    }

    fn version(&self) -> String {
        self.version.clone()
    }

    async fn shutdown(mut self: Box<Self>) {
        if let Some(mut server) = self.server.take() {
            // Fast shutdown, so the cluster directory can be removed cleanly.
            server.stop("INT", Duration::from_secs(10));
        }
    }
}
