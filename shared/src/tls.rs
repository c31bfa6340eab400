//! TLS to Redis (`rediss://`, rustls): the CA bundle to trust (else the system's roots), and a
//! client certificate and key for servers that require mutual TLS (`tls-auth-clients yes`).
//!
//! The files are read when a connection is built, and checked when they are set: a missing or
//! unreadable file, or one that holds no PEM certificate (or key), is refused naming the
//! setting and the file. What only the handshake can tell (a certificate expired, signed by
//! another CA, or not valid for the address) fails the first connection, with rustls' reason
//! ("invalid peer certificate: Expired", "... NotValidForName", "... UnknownIssuer").

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// TLS settings of a [`RedisConfig`](crate::RedisConfig) (only with `rediss://` addresses).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM CA bundle that signs the server's certificate; `None`: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca: Option<PathBuf>,
    /// PEM client certificate (chain), for mutual TLS; with `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<PathBuf>,
}

impl Tls {
    /// TLS that trusts the system's roots and presents no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust the CA certificates in the PEM file at `path` (instead of the system's roots).
    pub fn ca(mut self, path: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        let path = path.into();
        read_pem(&path, "tls.ca", "CERTIFICATE")?;
        self.ca = Some(path);
        Ok(self)
    }

    /// Present the client certificate `cert` with its private key `key` (PEM files).
    pub fn client_cert(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Result<Self, ConfigError> {
        let (cert, key) = (cert.into(), key.into());
        read_pem(&cert, "tls.cert", "CERTIFICATE")?;
        read_pem(&key, "tls.key", "PRIVATE KEY")?;
        self.cert = Some(cert);
        self.key = Some(key);
        Ok(self)
    }

    /// The CA bundle, if one is set.
    pub fn ca_path(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// The client certificate and key, if set.
    pub fn client_cert_paths(&self) -> Option<(&Path, &Path)> {
        Some((self.cert.as_deref()?, self.key.as_deref()?))
    }

    /// Check a deserialized value as the setters do (a certificate without its key, files
    /// that can't be read).
    pub(crate) fn validate(self) -> Result<Self, ConfigError> {
        let mut out = Tls::new();
        if let Some(ca) = self.ca {
            out = out.ca(ca)?;
        }
        match (self.cert, self.key) {
            (Some(cert), Some(key)) => out.client_cert(cert, key),
            (None, None) => Ok(out),
            (Some(_), None) => Err(ConfigError::new(
                "tls.key",
                "missing: a client certificate (tls.cert) needs its private key",
            )),
            (None, Some(_)) => Err(ConfigError::new(
                "tls.cert",
                "missing: a private key (tls.key) needs its client certificate",
            )),
        }
    }

    /// The files' contents, as redis-rs takes them.
    pub(crate) fn certificates(&self) -> Result<redis::TlsCertificates, ConfigError> {
        let root_cert = match &self.ca {
            Some(ca) => Some(read_pem(ca, "tls.ca", "CERTIFICATE")?),
            None => None,
        };
        let client_tls = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read_pem(cert, "tls.cert", "CERTIFICATE")?,
                client_key: read_pem(key, "tls.key", "PRIVATE KEY")?,
            }),
            _ => None,
        };
        Ok(redis::TlsCertificates {
            client_tls,
            root_cert,
        })
    }
}

/// Read a PEM file that must hold a `-----BEGIN ...<label>-----` block.
fn read_pem(path: &Path, field: &'static str, label: &str) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::new(field, format!("cannot read {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    let found = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{label}-----")));
    if !found {
        return Err(ConfigError::new(
            field,
            format!(
                "{} holds no PEM {} (a '-----BEGIN ...{label}-----' block)",
                path.display(),
                label.to_lowercase()
            ),
        ));
    }
    Ok(bytes)
}
