//! Certificates for mutual TLS tests, made at run time: a CA and leaf
//! certificates it signs (for `localhost` and `127.0.0.1`, usable as server
//! and client), written as PEM files in a private directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A test CA and the directory its files go to (removed on drop).
pub struct TestCa {
    dir: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate (PEM file).
    pub ca: PathBuf,
}

/// One certificate signed by a [`TestCa`], as the three files a process
/// takes (`SWITCHBOARD_TLS_CERT`/`KEY`/`CA`).
#[derive(Debug, Clone)]
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TestCert {
    /// The environment that makes a process use this certificate.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SWITCHBOARD_TLS_CERT", self.cert.display().to_string()),
            ("SWITCHBOARD_TLS_KEY", self.key.display().to_string()),
            ("SWITCHBOARD_TLS_CA", self.ca.display().to_string()),
        ]
    }

    /// The PEM contents: certificate, key, CA.
    pub fn pems(&self) -> (String, String, String) {
        let read = |p: &Path| std::fs::read_to_string(p).expect("read test PEM");
        (read(&self.cert), read(&self.key), read(&self.ca))
    }
}

impl TestCa {
    /// A new CA named `name`, its files under a fresh temporary directory.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "switchboard-tls-{name}-{}-{:x}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("create TLS directory");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, issuer.pem()).expect("write CA");
        Self { dir, issuer, ca }
    }

    /// A certificate for `localhost` and `127.0.0.1`, for a server or a
    /// client, named `name`.
    pub fn issue(&self, name: &str) -> TestCert {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        let cert_path = self.dir.join(format!("{name}.pem"));
        let key_path = self.dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        TestCert {
            cert: cert_path,
            key: key_path,
            ca: self.ca.clone(),
        }
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
