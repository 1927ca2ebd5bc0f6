//! TLS for the directories Roster talks to (the site's, and an import's upstream one): a rustls
//! client that trusts exactly the CAs it is given.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, pem::PemObject};

/// A client configuration trusting exactly the certificates in `pem`; `what` names where they
/// came from, for the errors.
pub fn trusting(pem: &str, what: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("bad certificate in {what}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("unusable certificate in {what}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{what} holds no certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
