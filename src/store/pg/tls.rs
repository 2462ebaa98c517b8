//! Encrypted connections to the database: rustls, verifying the server's certificate against
//! the configured CA file or the system's roots, with an optional client certificate.
//!
//! It decides only how a connection is wrapped; it must never weaken verification (there is
//! no "accept any certificate" mode: a server with a private CA is trusted through its file).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use postgres::config::SslMode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::super::{Result, StoreError};

/// TLS settings beside the URL's `sslmode`.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file of the certificate authorities to trust (default: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to the server (with `client_key`).
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

impl TlsOptions {
    fn any(&self) -> bool {
        self.ca_file.is_some() || self.client_cert.is_some() || self.client_key.is_some()
    }
}

/// How connections are made.
#[derive(Clone)]
pub(super) enum Tls {
    Plain,
    Rustls(MakeRustlsConnect),
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tls::Plain => "plain",
            Tls::Rustls(_) => "tls",
        })
    }
}

impl Tls {
    /// TLS when the URL says `sslmode=require` or a TLS file is configured (then `prefer`
    /// falls back to plain text only if the server offers no TLS at all); plain text for
    /// `sslmode=disable` and for a bare `prefer`, which libpq satisfies without verifying.
    pub(super) fn choose(mode: SslMode, options: &TlsOptions) -> Result<Self> {
        let wanted = match mode {
            SslMode::Disable => false,
            SslMode::Require => true,
            _ => options.any(),
        };
        if !wanted {
            return Ok(Tls::Plain);
        }
        Ok(Tls::Rustls(MakeRustlsConnect::new(client_config(options)?)))
    }

    pub(super) fn connect(
        &self,
        config: &postgres::Config,
    ) -> std::result::Result<postgres::Client, postgres::Error> {
        match self {
            Tls::Plain => config.connect(postgres::NoTls),
            Tls::Rustls(tls) => config.connect(tls.clone()),
        }
    }
}

fn tls_err(what: &str, path: Option<&Path>, e: impl std::fmt::Display) -> StoreError {
    let at = path
        .map(|p| format!(" {}", p.display()))
        .unwrap_or_default();
    StoreError::Database(format!("store TLS, {what}{at}: {e}"))
}

fn client_config(options: &TlsOptions) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match &options.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| tls_err("CA file", Some(path), e))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| tls_err("CA file", Some(path), e))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(tls_err(
                    "no certificate in the CA file",
                    Some(path),
                    "empty",
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(tls_err(
                    "no system root certificates (set store.tls_ca_file)",
                    None,
                    found
                        .errors
                        .first()
                        .map(|e| e.to_string())
                        .unwrap_or_default(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("protocol versions", None, e))?
        .with_root_certificates(roots);
    match (&options.client_cert, &options.client_key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| tls_err("client certificate", Some(cert), e))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| tls_err("client certificate", Some(cert), e))?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| tls_err("client key", Some(key), e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| tls_err("client certificate", Some(cert), e))
        }
        _ => Err(StoreError::Database(
            "store TLS: tls_client_cert and tls_client_key go together".into(),
        )),
    }
}
