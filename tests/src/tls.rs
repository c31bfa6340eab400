//! TLS material for tests, made by the `openssl` command (Debian's `openssl`, installed by
//! `scripts/setup`) in a fresh directory: a CA; a server certificate for `127.0.0.1` and
//! `localhost` signed by it; a client certificate signed by it (mutual TLS); and the bad ones
//! a client must refuse: signed by another CA, valid for another name, already expired.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The files, in a directory removed on drop.
#[derive(Debug)]
pub struct TlsFiles {
    dir: PathBuf,
}

/// A certificate and its private key.
#[derive(Debug, Clone)]
pub struct CertPair {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (run scripts/setup): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TlsFiles {
    /// Make every file (a few hundred milliseconds of RSA key generation).
    pub fn generate() -> Self {
        let dir = crate::workspace_root().join(".redis-test").join(format!(
            "tls-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = |name: &str| {
            openssl(
                &dir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=sluice test {name}"),
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.crt"),
                ],
            );
        };
        ca("ca");
        ca("other-ca");
        // A leaf signed by `issuer`, valid for `san` for `days` (0: expires at once).
        let leaf = |name: &str, issuer: &str, san: &str, days: &str| {
            openssl(
                &dir,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    &format!("/CN={name}"),
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            std::fs::write(
                dir.join(format!("{name}.ext")),
                format!("subjectAltName={san}\n"),
            )
            .unwrap();
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    &format!("{issuer}.crt"),
                    "-CAkey",
                    &format!("{issuer}.key"),
                    "-CAcreateserial",
                    "-days",
                    days,
                    "-extfile",
                    &format!("{name}.ext"),
                    "-out",
                    &format!("{name}.crt"),
                ],
            );
        };
        leaf("server", "ca", "IP:127.0.0.1,DNS:localhost", "2");
        leaf("client", "ca", "DNS:sluice-test-client", "2");
        leaf("foreign", "other-ca", "IP:127.0.0.1,DNS:localhost", "2");
        leaf("wrong-name", "ca", "DNS:elsewhere.example", "2");
        leaf("expired", "ca", "IP:127.0.0.1,DNS:localhost", "0");
        Self { dir }
    }

    fn pair(&self, name: &str) -> CertPair {
        CertPair {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        }
    }

    /// The CA that signs `server`, `client`, `wrong-name` and `expired`.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A valid server certificate for 127.0.0.1.
    pub fn server(&self) -> CertPair {
        self.pair("server")
    }

    /// A client certificate the CA signed (mutual TLS).
    pub fn client(&self) -> CertPair {
        self.pair("client")
    }

    /// A server certificate for 127.0.0.1 signed by another CA.
    pub fn foreign(&self) -> CertPair {
        self.pair("foreign")
    }

    /// A server certificate of the right CA for another name (`elsewhere.example`).
    pub fn wrong_name(&self) -> CertPair {
        self.pair("wrong-name")
    }

    /// A server certificate of the right CA that expired (valid for 0 days).
    pub fn expired(&self) -> CertPair {
        self.pair("expired")
    }

    /// The directory holding them.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
