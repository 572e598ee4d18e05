//! The files of an enrolled agent in its data directory.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::{cert, fs, AgentKey, PkiError};

/// The files of an enrolled agent in its data directory: `key.pem` (mode
/// 0600), `cert.pem` and `ca.pem`, in a directory with mode 0700.
/// `cert.pem` is written last and removed first, so it says whether the
/// agent is enrolled.
#[derive(Debug, Clone)]
pub struct AgentFiles {
    dir: PathBuf,
}

/// What an enrolled agent has on disk.
#[derive(Debug)]
pub struct Enrolled {
    pub key: AgentKey,
    pub cert_pem: String,
    pub ca_pem: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

impl AgentFiles {
    /// The files in `dir`; nothing is read or created yet.
    pub fn new(dir: &Path) -> AgentFiles {
        AgentFiles { dir: dir.to_owned() }
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `None` when the agent is not enrolled yet (no `cert.pem`); an error
    /// when the files are partial, damaged, or the key is open to other
    /// users.
    pub fn load(&self) -> Result<Option<Enrolled>, PkiError> {
        let Some(cert_pem) = fs::read(&self.cert_path())? else {
            return Ok(None);
        };
        let key_pem = fs::read_private(&self.key_path(), "the agent key")?;
        let ca_pem = fs::read(&self.ca_path())?;
        let (Some(key_pem), Some(ca_pem)) = (key_pem, ca_pem) else {
            return Err(self.damaged("key.pem or ca.pem is missing"));
        };
        let key = AgentKey::from_pem(&key_pem).map_err(|e| self.damaged(&format!("key.pem: {e}")))?;
        let (not_before, not_after) = inspect(&key, &cert_pem, &ca_pem).map_err(|e| self.damaged(&e))?;
        Ok(Some(Enrolled { key, cert_pem, ca_pem, not_before, not_after }))
    }

    /// Saves what enrolment produced, each file written atomically, the key
    /// first and the certificate last. Refuses a certificate that is not
    /// for `key` or not signed by `ca_pem`, so `load` reads back what is
    /// saved.
    pub fn save(&self, key: &AgentKey, cert_pem: &str, ca_pem: &str) -> Result<(), PkiError> {
        inspect(key, cert_pem, ca_pem).map_err(|e| {
            PkiError::new(format!(
                "the certificate the server sent cannot be used ({e}): enrol again with a new token (`ajar agent-token create --group G` on the server)"
            ))
        })?;
        fs::private_dir(&self.dir)?;
        fs::write_atomic(&self.key_path(), key.to_pem().as_bytes(), 0o600)?;
        fs::write_atomic(&self.ca_path(), ca_pem.as_bytes(), 0o644)?;
        fs::write_atomic(&self.cert_path(), cert_pem.as_bytes(), 0o644)
    }

    /// Removes `cert.pem` and then `key.pem` (when the server says the
    /// agent was revoked), so nothing that still authenticates is left;
    /// `ca.pem` stays, as it proves nothing. Missing files are fine.
    pub fn forget(&self) -> Result<(), PkiError> {
        fs::remove(&self.cert_path())?;
        fs::remove(&self.key_path())?;
        if self.dir.is_dir() {
            fs::sync_dir(&self.dir).map_err(|e| {
                PkiError::new(format!("cannot sync {}: {e}; check that the disk works", self.dir.display()))
            })?;
        }
        Ok(())
    }

    fn damaged(&self, why: &str) -> PkiError {
        PkiError::new(format!(
            "the agent's files in {} are damaged ({why}): remove {} and enrol again with a new token (`ajar agent-token create --group G` on the server)",
            self.dir.display(),
            self.cert_path().display()
        ))
    }
}

/// Checks that `cert_pem` is for `key` and signed by `ca_pem`, and returns
/// its validity; the error says what does not fit.
fn inspect(key: &AgentKey, cert_pem: &str, ca_pem: &str) -> Result<(DateTime<Utc>, DateTime<Utc>), String> {
    let cert_der = cert::parse_pem(cert_pem, "cert.pem").map_err(|e| e.to_string())?;
    let ca_der = cert::parse_pem(ca_pem, "ca.pem").map_err(|e| e.to_string())?;
    let cert = cert::parse_der(&cert_der, "cert.pem").map_err(|e| e.to_string())?;
    let ca = cert::parse_der(&ca_der, "ca.pem").map_err(|e| e.to_string())?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err("cert.pem is not the certificate of key.pem".into());
    }
    if cert.verify_signature(Some(ca.public_key())).is_err() {
        return Err("cert.pem is not signed by ca.pem".into());
    }
    cert::validity(&cert).map_err(|e| e.to_string())
}
