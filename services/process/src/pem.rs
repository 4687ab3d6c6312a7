//! PEM files named by a setting (certificates, private keys), read and checked at start so that
//! a wrong path or a file of the wrong kind is one line naming the setting, not a failed
//! handshake later.

use std::path::Path;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// The bytes of a PEM file holding one or more certificates.
pub fn certificates(setting: &str, path: &Path) -> Result<Vec<u8>, String> {
    let bytes = read(setting, path)?;
    let count = CertificateDer::pem_slice_iter(&bytes)
        .try_fold(0usize, |count, certificate| certificate.map(|_| count + 1))
        .map_err(|error| format!("{setting}: {}: not a PEM certificate file: {error}", path.display()))?;
    if count == 0 {
        return Err(format!("{setting}: {}: holds no PEM certificate", path.display()));
    }
    Ok(bytes)
}

/// The bytes of a PEM file holding a private key (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(setting: &str, path: &Path) -> Result<Vec<u8>, String> {
    let bytes = read(setting, path)?;
    // The error never quotes the file: it holds a secret.
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|_| format!("{setting}: {}: holds no PEM private key", path.display()))?;
    Ok(bytes)
}

fn read(setting: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("{setting}: cannot read {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_the_wrong_kind_names_the_setting() {
        let dir = std::env::temp_dir().join(format!("pem-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("{error}"));
        let file = dir.join("not-a-cert.pem");
        std::fs::write(&file, "hello").unwrap_or_else(|error| panic!("{error}"));
        let error = certificates("X_CERT", &file).unwrap_err();
        assert!(error.starts_with("X_CERT: ") && error.contains("holds no PEM certificate"), "{error}");
        let error = private_key("X_KEY", &file).unwrap_err();
        assert!(error.starts_with("X_KEY: "), "{error}");
        let error = certificates("X_CERT", &dir.join("missing")).unwrap_err();
        assert!(error.starts_with("X_CERT: cannot read"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
