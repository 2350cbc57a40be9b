//! How client commands connect: with the `--certs-dir` user's certificate, or plaintext with
//! `--insecure`. Set once from the command line, before any command runs.

use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use zonekv_client::{AdminClient, Client, ClientConfig};
use zonekv_tls::{CertsDir, Tls};

use crate::cli::SecurityArgs;

static TLS: OnceLock<Option<Tls>> = OnceLock::new();

/// Loads the client certificate named by `args` (once; later calls change nothing).
pub fn init(args: &SecurityArgs) -> Result<()> {
    let tls = match (&args.certs_dir, args.insecure) {
        (Some(_), true) => bail!("--certs-dir and --insecure exclude each other"),
        (Some(dir), false) => {
            Some(Tls::client(CertsDir::new(dir), &args.user).with_context(|| {
                format!("loading user {}'s certificate from {}", args.user, dir.display())
            })?)
        }
        (None, true) => None,
        (None, false) => bail!(
            "pass --certs-dir DIR (with ca.crt and client.{}.crt/.key; see `zonekv cert`) or --insecure for a node started --insecure",
            args.user
        ),
    };
    let _ = TLS.set(tls);
    Ok(())
}

fn config<I, S>(endpoints: I) -> ClientConfig
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut config = ClientConfig::new(endpoints);
    config.tls = TLS.get().cloned().flatten();
    config
}

/// A key-value client of `endpoints`.
pub fn client<I, S>(endpoints: I) -> Result<Client>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Ok(Client::with_config(config(endpoints))?)
}

/// An admin client of `endpoints`.
pub fn admin<I, S>(endpoints: I) -> Result<AdminClient>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    Ok(AdminClient::with_config(config(endpoints))?)
}
