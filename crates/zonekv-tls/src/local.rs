//! Certificates for a whole cluster on one machine — `LocalCluster`, the demo, the process
//! tests, the nemesis and the benchmark harness — created where missing:
//!
//! ```text
//! ROOT/ca.crt, ca.key                   the CA
//! ROOT/client.root.crt, .key            client user root
//! ROOT/node-ID/ca.crt, node.crt, .key   node ID's certificates directory, for 127.0.0.1 and localhost
//! ```

use std::path::{Path, PathBuf};

use crate::{CA_VALIDITY, CertsDir, Error, LEAF_VALIDITY, ROOT_USER, Result, Validity};

/// Node `id`'s certificates directory in a local cluster's `root`.
pub fn local_node_dir(root: &Path, id: u64) -> PathBuf {
    root.join(format!("node-{id}"))
}

/// Creates what is missing of a local cluster's certificates for nodes `1..=nodes` (see the
/// module docs). A node's directory is complete once its `node.crt` exists.
pub fn local_pki(root: &Path, nodes: u64) -> Result<()> {
    let ca = CertsDir::new(root);
    if !ca.ca_cert().exists() {
        crate::create_ca(&ca, Validity::from_now(CA_VALIDITY), false)?;
    }
    if !ca.client_cert(ROOT_USER).exists() {
        crate::create_client(&ca, &ca, ROOT_USER, Validity::from_now(LEAF_VALIDITY), false)?;
    }
    let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
    for id in 1..=nodes {
        let dir = CertsDir::new(local_node_dir(root, id));
        if !dir.node_cert().exists() {
            std::fs::create_dir_all(dir.path()).map_err(Error::io(dir.path()))?;
            std::fs::copy(ca.ca_cert(), dir.ca_cert()).map_err(Error::io(dir.ca_cert()))?;
            crate::create_node(&dir, &ca, id, &hosts, Validity::from_now(LEAF_VALIDITY), true)?;
        }
    }
    Ok(())
}
