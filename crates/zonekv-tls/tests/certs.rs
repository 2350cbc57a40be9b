//! The certificates tooling: what `create-*` writes, what `list` and the identity parser read
//! back, what loading refuses, and that a reload keeps the old configuration when the new
//! files are bad.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use zonekv_tls::{CertsDir, Error, Identity, Tls, Validity};

fn pki() -> (tempfile::TempDir, CertsDir) {
    let dir = tempfile::tempdir().unwrap();
    let certs = CertsDir::new(dir.path());
    zonekv_tls::create_ca(&certs, Validity::days(10), false).unwrap();
    (dir, certs)
}

#[test]
fn created_certificates_name_their_holder_and_keys_are_private() {
    let (_dir, certs) = pki();
    zonekv_tls::create_node(
        &certs,
        &certs,
        7,
        &["127.0.0.7".into(), "db-7.example".into()],
        Validity::days(5),
        false,
    )
    .unwrap();
    zonekv_tls::create_client(&certs, &certs, "alice", Validity::days(5), false).unwrap();
    for key in [certs.ca_key(), certs.node_key(), certs.client_key("alice")] {
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", key.display());
    }
    let listed = zonekv_tls::list(&certs).unwrap();
    let names: Vec<String> =
        listed.iter().map(|c| c.file.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["ca.crt", "client.alice.crt", "node.crt"]);
    assert!(listed[0].is_ca);
    assert_eq!(listed[1].identity, Ok(Identity::User("alice".into())));
    assert_eq!(listed[2].identity, Ok(Identity::Node(7)));
    assert_eq!(listed[2].hosts, ["127.0.0.7", "db-7.example"]);
    assert!(listed.iter().all(|c| !c.expired));
    assert_eq!(Tls::node(certs.clone()).unwrap().identity(), Identity::Node(7));
    assert_eq!(Tls::client(certs.clone(), "alice").unwrap().identity(), Identity::User("alice".into()));
}

#[test]
fn nothing_is_overwritten_unless_asked_and_bad_names_are_refused() {
    let (_dir, certs) = pki();
    let again = zonekv_tls::create_ca(&certs, Validity::days(10), false);
    assert!(matches!(again, Err(Error::InvalidArgument(m)) if m.contains("--overwrite")));
    for bad in ["", "Root", "node", "a b", "9lives"] {
        assert!(zonekv_tls::create_client(&certs, &certs, bad, Validity::days(1), false).is_err(), "{bad:?}");
    }
    assert!(zonekv_tls::create_node(&certs, &certs, 1, &[], Validity::days(1), false).is_err());
    assert!(zonekv_tls::create_node(&certs, &certs, 0, &["h".into()], Validity::days(1), false).is_err());
}

#[test]
fn a_certificate_outside_its_validity_or_for_someone_else_does_not_load() {
    let (_dir, certs) = pki();
    let past = Validity {
        not_before: SystemTime::now() - Duration::from_secs(10 * 86400),
        lifetime: Duration::from_secs(86400),
    };
    zonekv_tls::create_client(&certs, &certs, "old", past, false).unwrap();
    let err = Tls::client(certs.clone(), "old").unwrap_err().to_string();
    assert!(err.contains("not valid now"), "{err}");
    let future = Validity {
        not_before: SystemTime::now() + Duration::from_secs(86400),
        lifetime: Duration::from_secs(86400),
    };
    zonekv_tls::create_client(&certs, &certs, "early", future, false).unwrap();
    assert!(Tls::client(certs.clone(), "early").unwrap_err().to_string().contains("not valid now"));
    // A client certificate renamed to another user's file identifies that other user? No.
    zonekv_tls::create_client(&certs, &certs, "bob", Validity::days(1), false).unwrap();
    std::fs::copy(certs.client_cert("bob"), certs.client_cert("carol")).unwrap();
    std::fs::copy(certs.client_key("bob"), certs.client_key("carol")).unwrap();
    let err = Tls::client(certs.clone(), "carol").unwrap_err().to_string();
    assert!(err.contains("user bob"), "{err}");
    // A client certificate in the node's place is refused as a node certificate.
    std::fs::copy(certs.client_cert("bob"), certs.node_cert()).unwrap();
    std::fs::copy(certs.client_key("bob"), certs.node_key()).unwrap();
    assert!(Tls::node(certs.clone()).is_err());
}

#[test]
fn a_reload_takes_new_files_and_keeps_the_old_ones_when_the_new_are_bad() {
    let (_dir, certs) = pki();
    zonekv_tls::create_node(&certs, &certs, 3, &["127.0.0.1".into()], Validity::days(5), false).unwrap();
    let tls = Tls::node(certs.clone()).unwrap();
    assert_eq!(tls.identity(), Identity::Node(3));
    // Rotation: a new certificate of the same node is picked up.
    let before = tls.not_after();
    zonekv_tls::create_node(&certs, &certs, 3, &["127.0.0.1".into()], Validity::days(50), true).unwrap();
    tls.reload().unwrap();
    assert_ne!(tls.not_after(), before, "the rotated certificate was not loaded");
    // One of another node is refused: a reload never changes who we are.
    let rotated = tls.not_after();
    zonekv_tls::create_node(&certs, &certs, 4, &["127.0.0.1".into()], Validity::days(5), true).unwrap();
    assert!(tls.reload().unwrap_err().to_string().contains("node 4"));
    assert_eq!((tls.identity(), tls.not_after()), (Identity::Node(3), rotated.clone()));
    // A half-written or wrong file is refused and the loaded one stays.
    std::fs::write(certs.node_cert(), b"-----BEGIN CERTIFICATE-----\nnope\n").unwrap();
    assert!(tls.reload().is_err());
    assert_eq!((tls.identity(), tls.not_after()), (Identity::Node(3), rotated));
}
