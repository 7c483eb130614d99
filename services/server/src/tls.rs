//! TLS of the HTTP API (rustls, ring provider): `--tls-cert`/`--tls-key` PEM files, read at
//! start and again on SIGHUP. The certificate in use sits behind an `ArcSwap`: a reload swaps
//! it for new handshakes; connections already open keep theirs. A reload that fails (a file
//! missing or malformed, a key that does not match) keeps the certificate in use and says why.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The API's certificate, reloadable.
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// Reads the certificate chain and key; an error says which file and why.
    pub fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Arc<Self>> {
        let key = read_certified_key(cert_path, key_path)?;
        Ok(Arc::new(ReloadingCert {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: ArcSwap::from_pointee(key),
        }))
    }

    /// Reads both files again; on success new handshakes use them, on failure the certificate
    /// in use stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let key = read_certified_key(&self.cert_path, &self.key_path)?;
        self.current.store(Arc::new(key));
        Ok(())
    }

    /// The rustls server configuration serving this certificate (TLS 1.2 and 1.3, no client
    /// certificates).
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        Ok(config)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read_certified_key(cert_path: &Path, key_path: &Path) -> anyhow::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("reading the TLS certificate {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing the TLS certificate {}", cert_path.display()))?;
    if certs.is_empty() {
        anyhow::bail!(
            "the TLS certificate file {} holds no PEM certificate",
            cert_path.display()
        );
    }
    // The key's content never appears in an error.
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|_| {
        anyhow::anyhow!(
            "the TLS key file {} holds no readable PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key_path.display()
        )
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| {
        anyhow::anyhow!(
            "the TLS key {} is of an unsupported type (RSA, ECDSA P-256/P-384 or Ed25519)",
            key_path.display()
        )
    })?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|_| {
        anyhow::anyhow!(
            "the TLS key {} does not belong to the certificate {}",
            key_path.display(),
            cert_path.display()
        )
    })?;
    Ok(certified)
}

/// Reloads `cert` (if the API serves TLS) on every SIGHUP until the process ends (logging the
/// outcome; a failed reload keeps the certificate in use). Registered before serving, with or
/// without TLS, so a SIGHUP (`systemctl reload`) never takes the default action: terminating
/// the process without draining it.
pub fn reload_on_sighup(cert: Option<Arc<ReloadingCert>>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    actix_rt::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(cert) = &cert else {
                tracing::info!("SIGHUP: nothing to reload (the API serves plain HTTP)");
                continue;
            };
            let reloaded = {
                let cert = cert.clone();
                tokio::task::spawn_blocking(move || cert.reload()).await
            };
            match reloaded.unwrap_or_else(|error| Err(anyhow::anyhow!("reload task: {error}"))) {
                Ok(()) => {
                    tracing::info!(cert = %cert.cert_path.display(), "tls certificate reloaded")
                }
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "tls certificate reload failed; keeping the one in use")
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    #[test]
    fn loads_swaps_and_keeps_the_old_certificate_on_a_bad_reload() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a) = write_pair(dir.path(), "a");
        let (cert_b, key_b) = write_pair(dir.path(), "b");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::copy(&cert_a, &cert).unwrap();
        std::fs::copy(&key_a, &key).unwrap();
        let reloading = ReloadingCert::load(&cert, &key).unwrap();
        let first = reloading.current.load_full().cert[0].clone();
        reloading.server_config().unwrap();

        // A key of another certificate: refused, the old one stays.
        std::fs::copy(&cert_b, &cert).unwrap();
        let error = reloading.reload().unwrap_err().to_string();
        assert!(error.contains("does not belong"), "{error}");
        assert_eq!(reloading.current.load_full().cert[0], first);

        std::fs::copy(&key_b, &key).unwrap();
        reloading.reload().unwrap();
        assert_ne!(reloading.current.load_full().cert[0], first);

        std::fs::write(&key, "not a key").unwrap();
        let error = format!("{:#}", reloading.reload().unwrap_err());
        assert!(error.contains("no readable PEM private key"), "{error}");
        assert!(ReloadingCert::load(&dir.path().join("missing.crt"), &key).is_err());
    }
}
