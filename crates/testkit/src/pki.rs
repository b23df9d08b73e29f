//! A certificate authority of a test's own (rcgen): a CA, server certificates for loopback, and
//! client certificates, written as PEM files for the processes under test.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A test CA and where its certificate is.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// `ca.pem` in the directory given to [`TestCa::new`].
    pub cert_file: PathBuf,
    dir: PathBuf,
}

/// A certificate and its key, written as files.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// The certificate (DER), to compare with what a server presents.
    pub der: Vec<u8>,
}

impl TestCa {
    /// A new CA named `name`, its certificate written to `dir/<name>.pem`.
    ///
    /// # Panics
    /// If key generation or the file write fails.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("self-signed CA");
        let cert_file = dir.join(format!("{name}.pem"));
        std::fs::write(&cert_file, issuer.pem()).expect("write CA");
        Self {
            issuer,
            cert_file,
            dir: dir.to_owned(),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1` (and a client one too: the same
    /// certificate may present itself when its process calls others), written as
    /// `<name>.pem` / `<name>-key.pem`.
    pub fn server(&self, name: &str) -> Issued {
        self.issue(
            name,
            vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A client-only certificate named `name`.
    pub fn client(&self, name: &str) -> Issued {
        self.issue(name, Vec::new(), vec![ExtendedKeyUsagePurpose::ClientAuth])
    }

    fn issue(
        &self,
        name: &str,
        names: Vec<String>,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Issued {
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = usages;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let cert_file = self.dir.join(format!("{name}.pem"));
        let key_file = self.dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert_file, cert.pem()).expect("write certificate");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        Issued {
            cert_file,
            key_file,
            der: cert.der().to_vec(),
        }
    }
}
