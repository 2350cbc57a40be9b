//! Helpers shared by the tests that run real `zonekv` processes.

// Each test file uses a different subset.
#![allow(dead_code)]

pub mod raw;
pub mod secure;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};

use zonekv_client::{AdminClient, Client, ClientConfig};

pub const ZONEKV: &str = env!("CARGO_BIN_EXE_zonekv");

/// The certificates every `zonekv` process of this test binary uses (nodes 1 to 8 and client
/// user root, one CA), created once: processes run with TLS, as `zonekv start` does by default.
pub fn certs() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("zonekv-test-certs-").tempdir().expect("temp dir");
        zonekv_tls::local_pki(dir.path(), 8).expect("create the test certificates");
        dir
    })
    .path()
}

/// Client settings for `zonekv` processes: root's certificate.
pub fn client_config(endpoints: Vec<String>) -> ClientConfig {
    let mut config = ClientConfig::new(endpoints);
    config.tls = Some(
        zonekv_tls::Tls::client(zonekv_tls::CertsDir::new(certs()), "root").expect("root's certificate"),
    );
    config
}

/// A key-value client of `zonekv` processes, as user root.
pub fn client<I: IntoIterator<Item = S>, S: Into<String>>(endpoints: I) -> Client {
    Client::with_config(client_config(endpoints.into_iter().map(Into::into).collect())).expect("client")
}

/// An admin client of `zonekv` processes, as user root.
pub fn admin<I: IntoIterator<Item = S>, S: Into<String>>(endpoints: I) -> AdminClient {
    AdminClient::with_config(client_config(endpoints.into_iter().map(Into::into).collect()))
        .expect("admin client")
}

/// Node `id`'s certificates directory.
pub fn node_certs(id: u64) -> std::path::PathBuf {
    zonekv_tls::local_node_dir(certs(), id)
}

/// A free port below the ephemeral range (32768+), so an outgoing connection cannot take it
/// between this check and the server's bind. Distinct per call.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % 10_000) as u16;
    (0..10_000)
        .map(|_| 21_000 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 10_000)
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port between 21000 and 31000")
}

pub struct Proc {
    pub id: u64,
    pub addr: String,
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn(id: u64, addr: &str, dir: &Path, extra: &[&str]) -> Child {
    spawn_logged(id, addr, dir, extra, Stdio::piped())
}

/// Each node's log goes to `node-N.log` in the test directory; [`logs`] prints them when a
/// test fails.
pub fn spawn_logged(id: u64, addr: &str, dir: &Path, extra: &[&str], stderr: Stdio) -> Child {
    Command::new(ZONEKV)
        .args(["start", "--node-id", &id.to_string(), "--listen", addr, "--data-dir"])
        .arg(dir.join(format!("node-{id}")))
        .arg("--certs-dir")
        .arg(node_certs(id))
        .args(extra)
        .env("RUST_LOG", std::env::var("ZONEKV_TEST_LOG").unwrap_or_else(|_| "info".into()))
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn zonekv")
}

/// Waits for the "serving on" line, so the node is up before we talk to it.
pub fn wait_serving(child: &mut Child) {
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert!(line.contains("serving on"), "unexpected first line {line:?}");
}

/// `zonekv` with the test certificates (root's), unless `args` say `--insecure`.
fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(ZONEKV);
    if !args.contains(&"--insecure") {
        cmd.arg("--certs-dir").arg(certs());
    }
    cmd.args(args);
    cmd
}

/// Runs the `zonekv` command line and returns its standard output; fails the test if it fails.
pub fn cli(args: &[&str]) -> String {
    let out = command(args).output().expect("run zonekv");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "zonekv {args:?}: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Runs the `zonekv` command line expecting it to fail; returns its standard error.
pub fn cli_fails(args: &[&str]) -> String {
    let out = command(args).output().expect("run zonekv");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "zonekv {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    stderr
}

/// The last lines of every node log in `dir`.
pub fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for id in 1..=3 {
        if let Ok(text) = std::fs::read_to_string(dir.join(format!("node-{id}.log"))) {
            let lines: Vec<&str> = text.lines().collect();
            out += &format!("--- node {id} (last 60 lines) ---\n");
            out += &lines[lines.len().saturating_sub(60)..].join("\n");
            out += "\n";
        }
    }
    out
}

pub async fn leader_of(admin: &AdminClient, procs: &[Proc]) -> Option<u64> {
    for p in procs {
        if let Ok(s) = admin.status(&p.addr).await
            && s.ranges.first().is_some_and(|r| r.state == "leader")
        {
            return Some(p.id);
        }
    }
    None
}

/// Starts node `id` on `addr` with its data in `dir`, its log appended to `node-ID.log` there,
/// and `env` set; returns once it serves.
pub fn start_node(id: u64, addr: &str, dir: &Path, env: &[(&str, &str)]) -> Proc {
    start_node_with(id, addr, dir, env, &[])
}

/// [`start_node`] with more arguments to `zonekv start` (a `--config` file).
pub fn start_node_with(id: u64, addr: &str, dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("node-{id}.log")))
        .expect("open node log");
    let mut cmd = Command::new(ZONEKV);
    cmd.args(["start", "--node-id", &id.to_string(), "--listen", addr, "--data-dir"])
        .arg(dir.join(format!("node-{id}")))
        .arg("--certs-dir")
        .arg(node_certs(id))
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", std::env::var("ZONEKV_TEST_LOG").unwrap_or_else(|_| "info".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    let mut child = cmd.spawn().expect("spawn zonekv");
    wait_serving(&mut child);
    Proc { id, addr: addr.to_string(), child }
}

/// Starts `n` nodes and initialises them as one cluster.
pub fn start_cluster(n: u64, dir: &Path, env: &[(&str, &str)]) -> Vec<Proc> {
    let procs: Vec<Proc> =
        (1..=n).map(|id| start_node(id, &format!("127.0.0.1:{}", free_port()), dir, env)).collect();
    let spec: Vec<String> = procs.iter().map(|p| format!("{}={}", p.id, p.addr)).collect();
    let out = cli(&["init", "--nodes", &spec.join(",")]);
    assert!(out.contains(&format!("initialized a cluster of {n} nodes")), "{out}");
    procs
}
