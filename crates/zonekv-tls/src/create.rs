//! Creating the CA and the node and client certificates (`zonekv cert …`), and listing a
//! directory's certificates. Keys are ECDSA P-256, written 0600; every file is written to a
//! temporary name and renamed, so a node reloading its certificates never reads half a file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::identity::{NODE_COMMON_NAME, node_uri};
use crate::{CertsDir, Error, Identity, Result, check_user};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// How long a new CA certificate is valid: 10 years.
pub const CA_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 3600);
/// How long a new node or client certificate is valid: 5 years (rotate it before, see
/// docs/security.md).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(1826 * 24 * 3600);

/// When a new certificate is valid: from `not_before` (default: an hour ago, for clocks a
/// little behind) to `not_before + lifetime`.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Start of validity.
    pub not_before: SystemTime,
    /// Length of validity.
    pub lifetime: Duration,
}

impl Validity {
    /// From an hour ago, for `lifetime`.
    pub fn from_now(lifetime: Duration) -> Self {
        Self { not_before: SystemTime::now() - Duration::from_secs(3600), lifetime }
    }

    /// For `days` days from now.
    pub fn days(days: u32) -> Self {
        Self::from_now(DAY * days)
    }

    fn apply(&self, params: &mut CertificateParams) {
        params.not_before = self.not_before.into();
        params.not_after = (self.not_before + self.lifetime).into();
    }
}

/// The files a creation wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Creates the cluster's CA (`ca.crt`, `ca.key`) in `dir`, which is created if missing.
/// Refuses to replace an existing CA unless `overwrite`: every certificate it signed would
/// stop being trusted.
pub fn create_ca(dir: &CertsDir, validity: Validity, overwrite: bool) -> Result<Created> {
    let created = Created { cert: dir.ca_cert(), key: dir.ca_key() };
    refuse_existing(&created, overwrite)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name("ZoneKV CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity.apply(&mut params);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_pair(dir, &created, &cert.pem(), &key.serialize_pem())?;
    Ok(created)
}

/// Creates `node.crt` and `node.key` in `dir` for node `node_id`, valid for the names and IP
/// addresses in `hosts` (what peers and clients dial), signed by the CA in `dir` (or in
/// `ca_dir`, if the CA key lives elsewhere).
pub fn create_node(
    dir: &CertsDir,
    ca_dir: &CertsDir,
    node_id: u64,
    hosts: &[String],
    validity: Validity,
    overwrite: bool,
) -> Result<Created> {
    if node_id == 0 {
        return Err(Error::InvalidArgument("node id 0 names no node".into()));
    }
    if hosts.is_empty() {
        return Err(Error::InvalidArgument("a node certificate needs at least one --host".into()));
    }
    let created = Created { cert: dir.node_cert(), key: dir.node_key() };
    refuse_existing(&created, overwrite)?;
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.subject_alt_names.push(SanType::URI(node_uri(node_id).try_into()?));
    params.distinguished_name = name(NODE_COMMON_NAME);
    // A node serves (its port) and is a client (of its peers) with the same certificate.
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    sign_leaf(dir, ca_dir, &created, params, validity)
}

/// Creates `client.USER.crt` and `client.USER.key` in `dir` for user `user`, signed by the CA
/// in `ca_dir`.
pub fn create_client(
    dir: &CertsDir,
    ca_dir: &CertsDir,
    user: &str,
    validity: Validity,
    overwrite: bool,
) -> Result<Created> {
    check_user(user)?;
    let created = Created { cert: dir.client_cert(user), key: dir.client_key(user) };
    refuse_existing(&created, overwrite)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(user);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign_leaf(dir, ca_dir, &created, params, validity)
}

/// One certificate of a directory, as `zonekv cert list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The file.
    pub file: PathBuf,
    /// Whom it identifies (`None` for the CA, or the reason it identifies nobody).
    pub identity: Result<Identity, String>,
    /// Whether it is a CA certificate.
    pub is_ca: bool,
    /// Its host names and addresses.
    pub hosts: Vec<String>,
    /// Start of validity.
    pub not_before: String,
    /// End of validity.
    pub not_after: String,
    /// Whether it is outside its validity now.
    pub expired: bool,
}

/// Every certificate (`*.crt`) in `dir`, sorted by file name.
pub fn list(dir: &CertsDir) -> Result<Vec<CertInfo>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .map_err(Error::io(dir.path()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let der = crate::load::certs(&file)?
                .into_iter()
                .next()
                .ok_or_else(|| Error::bad(&file, "no certificate"))?;
            let p = crate::identity::parse(&der).map_err(|e| Error::bad(&file, e))?;
            Ok(CertInfo {
                file,
                identity: p.identity,
                is_ca: p.is_ca,
                hosts: p.hosts,
                not_before: p.not_before,
                not_after: p.not_after,
                expired: p.expired,
            })
        })
        .collect()
}

fn name(common: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "ZoneKV");
    dn.push(DnType::CommonName, common);
    dn
}

fn sign_leaf(
    dir: &CertsDir,
    ca_dir: &CertsDir,
    created: &Created,
    mut params: CertificateParams,
    validity: Validity,
) -> Result<Created> {
    let ca_cert = read_text(&ca_dir.ca_cert())?;
    let ca_key_path = ca_dir.ca_key();
    let ca_key =
        KeyPair::from_pem(&read_text(&ca_key_path)?).map_err(|e| Error::bad(&ca_key_path, e.to_string()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, ca_key)
        .map_err(|e| Error::bad(ca_dir.ca_cert(), e.to_string()))?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.use_authority_key_identifier_extension = true;
    validity.apply(&mut params);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    write_pair(dir, created, &cert.pem(), &key.serialize_pem())?;
    Ok(created.clone())
}

fn refuse_existing(created: &Created, overwrite: bool) -> Result<()> {
    for f in [&created.cert, &created.key] {
        if !overwrite && f.exists() {
            return Err(Error::InvalidArgument(format!(
                "{} exists; pass --overwrite to replace it",
                f.display()
            )));
        }
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(Error::io(path))
}

/// Writes the key first (0600), then the certificate, each through a temporary file.
fn write_pair(dir: &CertsDir, created: &Created, cert: &str, key: &str) -> Result<()> {
    std::fs::create_dir_all(dir.path()).map_err(Error::io(dir.path()))?;
    write_atomic(&created.key, key.as_bytes(), 0o600)?;
    write_atomic(&created.cert, cert.as_bytes(), 0o644)
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // A fresh name of our own (never an existing file or a symlink someone left there), created
    // with its final mode before a byte is written.
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}-{nanos}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(Error::io(&tmp))?;
    let written = f.write_all(data).and_then(|()| f.sync_all()).map_err(Error::io(&tmp));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::rename(&tmp, path).map_err(Error::io(path))
}
