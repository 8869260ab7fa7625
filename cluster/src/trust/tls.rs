//! Mutual TLS read from its PEM files at start, and [`Access`]: the gate and
//! certificates a process on the internal plane holds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchboard_common::trust::{ClusterTrust, TlsFiles};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use super::Gate;

/// A PEM file of the TLS settings that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {setting} {}", path.display())]
pub struct TlsError {
    /// The setting that names the file.
    pub setting: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Mutual TLS as read from its PEM files at start.
#[derive(Clone)]
pub struct Tls {
    identity: Identity,
    ca: Certificate,
    server_name: Option<String>,
}

impl Tls {
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let read = |path: &Path, setting: &'static str| {
            std::fs::read(path).map_err(|source| TlsError {
                setting,
                path: path.to_owned(),
                source,
            })
        };
        let cert = read(&files.cert, "SWITCHBOARD_TLS_CERT")?;
        let key = read(&files.key, "SWITCHBOARD_TLS_KEY")?;
        let ca = read(&files.ca, "SWITCHBOARD_TLS_CA")?;
        Ok(Self {
            identity: Identity::from_pem(cert, key),
            ca: Certificate::from_pem(ca),
            server_name: files.server_name.clone(),
        })
    }

    /// The router's gRPC server: client certificates signed by the CA are
    /// required.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    /// Dialing a router: its certificate must be signed by the CA, and this
    /// process presents its own.
    pub fn client(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone());
        match &self.server_name {
            Some(name) => config.domain_name(name.clone()),
            None => config,
        }
    }
}

/// What a process on the internal plane uses: the gate and, with TLS, the
/// loaded certificates.
#[derive(Clone)]
pub struct Access {
    pub gate: Arc<Gate>,
    pub tls: Option<Tls>,
}

impl Access {
    /// Loads what the checked settings name; warns loudly when nothing
    /// protects the plane.
    pub fn load(trust: &ClusterTrust, process: &str) -> Result<Self, TlsError> {
        if trust.is_insecure() {
            tracing::warn!(
                process,
                "INSECURE CLUSTER: --insecure-cluster is set and neither SWITCHBOARD_CLUSTER_SECRET \
                 nor mutual TLS is configured; anyone who reaches the internal gRPC port or the \
                 internal NATS subjects can read and inject every tenant's traffic"
            );
        }
        let tls = trust.tls.as_ref().map(Tls::load).transpose()?;
        Ok(Self {
            gate: Gate::new(trust.secret.clone()),
            tls,
        })
    }

    /// Neither a secret nor TLS (tests and standalone helpers).
    pub fn open() -> Self {
        Self {
            gate: Gate::new(None),
            tls: None,
        }
    }

    /// The URI scheme to dial routers with.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}
