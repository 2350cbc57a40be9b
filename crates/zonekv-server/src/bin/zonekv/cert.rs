//! `zonekv cert …`: creating and listing certificates.

use std::path::Path;

use anyhow::{Context, Result};
use zonekv_tls::{CertsDir, Validity};

use crate::cli::{CertCommand, LeafArgs};

pub fn run(dir: Option<&Path>, command: CertCommand) -> Result<()> {
    let dir = CertsDir::new(dir.context("`zonekv cert` needs --certs-dir DIR (or ZONEKV_CERTS_DIR)")?);
    let ca = |leaf: &LeafArgs| leaf.ca_dir.clone().map_or_else(|| dir.clone(), CertsDir::new);
    match command {
        CertCommand::CreateCa { lifetime_days, overwrite } => {
            let c = zonekv_tls::create_ca(&dir, Validity::days(lifetime_days), overwrite)?;
            out!(
                "created the CA: {} and {} (keep the key safe: it signs every certificate)",
                c.cert.display(),
                c.key.display()
            );
        }
        CertCommand::CreateNode { node_id, hosts, leaf } => {
            let c = zonekv_tls::create_node(
                &dir,
                &ca(&leaf),
                node_id,
                &hosts,
                Validity::days(leaf.lifetime_days),
                leaf.overwrite,
            )?;
            out!(
                "created node {node_id}'s certificate for {}: {} and {}",
                hosts.join(", "),
                c.cert.display(),
                c.key.display()
            );
        }
        CertCommand::CreateClient { user, leaf } => {
            let c = zonekv_tls::create_client(
                &dir,
                &ca(&leaf),
                &user,
                Validity::days(leaf.lifetime_days),
                leaf.overwrite,
            )?;
            out!("created user {user}'s certificate: {} and {}", c.cert.display(), c.key.display());
        }
        CertCommand::List => {
            for c in zonekv_tls::list(&dir)? {
                let file = c.file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
                let who = match (&c.identity, c.is_ca) {
                    (_, true) => "CA".to_string(),
                    (Ok(id), false) => id.to_string(),
                    (Err(why), false) => format!("no identity ({why})"),
                };
                let hosts =
                    if c.hosts.is_empty() { String::new() } else { format!("  hosts {}", c.hosts.join(",")) };
                let state = if c.expired { "  NOT VALID NOW" } else { "" };
                out!("{file}: {who}{hosts}  valid {} to {}{state}", c.not_before, c.not_after);
            }
        }
    }
    Ok(())
}
