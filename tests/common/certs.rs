//! A throwaway certificate authority and leaf certificates, generated per test.

use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

pub struct TestCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pagegate test CA");
        let cert = params.self_signed(&key).expect("ca cert");
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate for these DNS names / IP addresses.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes the CA as `ca.pem` and a leaf as `<name>.pem`/`<name>.key` into `dir`.
    pub fn write_leaf(&self, dir: &Path, name: &str, names: &[&str]) -> Leaf {
        let leaf = self.leaf(names);
        std::fs::write(dir.join(format!("{name}.pem")), &leaf.cert_pem).expect("write cert");
        std::fs::write(dir.join(format!("{name}.key")), &leaf.key_pem).expect("write key");
        std::fs::write(dir.join("ca.pem"), &self.cert_pem).expect("write ca");
        leaf
    }

    /// A TLS client config trusting only this CA, offering the given ALPN protocols.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(
                rustls_pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
                    .expect("ca der"),
            )
            .expect("add ca");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}
