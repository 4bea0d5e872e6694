//! `[fleet]`'s settings checked at load: node names, the default node (the host name) and stream,
//! and the Redis client built from the URL and the config's PEM files (a private CA instead of
//! the system's roots; a client certificate for a Redis that checks its clients').

use std::path::Path;

use redis::{Client, ClientTlsConfig, TlsCertificates};

use crate::config::FleetTls;

/// What a PEM file must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pem {
    Certificate,
    PrivateKey,
}

impl Pem {
    fn marker(self) -> &'static [u8] {
        match self {
            Pem::Certificate => b"-----BEGIN CERTIFICATE-----",
            // PKCS#8, PKCS#1 (RSA) and SEC1 (EC) keys all end their label so.
            Pem::PrivateKey => b"PRIVATE KEY-----",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Pem::Certificate => "certificate",
            Pem::PrivateKey => "private key",
        }
    }
}

/// The most a PEM file may hold: a whole CA bundle (Debian's is about 220 KB) fits.
const MAX_PEM_BYTES: u64 = 4 << 20;

/// The file at `path`, which must hold at least one PEM block of `kind`; the message names the
/// file (never its content: a key file is a secret).
fn read_pem(path: &Path, kind: Pem) -> Result<Vec<u8>, String> {
    let bytes = crate::small_file::read(path, MAX_PEM_BYTES)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    if memchr::memmem::find(&bytes, kind.marker()).is_none() {
        return Err(format!(
            "{}: no PEM {} in it (expected a \"{}\" block)",
            path.display(),
            kind.name(),
            String::from_utf8_lossy(kind.marker()).trim_matches('-'),
        ));
    }
    Ok(bytes)
}

/// The Redis client for `url` with the TLS files of `tls`. The error says which setting is at
/// fault: (`fleet.` key, message).
pub fn client(url: &str, tls: &FleetTls) -> Result<Client, (&'static str, String)> {
    if tls.ca.is_none() && tls.cert.is_none() && tls.key.is_none() {
        return Client::open(url).map_err(|e| ("fleet.url", e.to_string()));
    }
    let root_cert = match &tls.ca {
        Some(p) => Some(read_pem(p, Pem::Certificate).map_err(|m| ("fleet.tls_ca", m))?),
        None => None,
    };
    let client_tls = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read_pem(cert, Pem::Certificate).map_err(|m| ("fleet.tls_cert", m))?,
            client_key: read_pem(key, Pem::PrivateKey).map_err(|m| ("fleet.tls_key", m))?,
        }),
        (Some(_), None) => return Err(("fleet.tls_key", "missing: tls_cert needs its key".into())),
        (None, Some(_)) => {
            return Err((
                "fleet.tls_cert",
                "missing: tls_key needs its certificate".into(),
            ))
        }
        (None, None) => None,
    };
    Client::build_with_tls(
        url,
        TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(|e| {
        // The client parses the files only here; its message says which one it refused.
        let text = e.to_string();
        let key = if text.contains("root certificate") || text.contains("trust anchors") {
            "fleet.tls_ca"
        } else if text.contains("client certificate") {
            "fleet.tls_cert"
        } else if text.contains("private key") {
            "fleet.tls_key"
        } else {
            "fleet.url"
        };
        (key, text)
    })
}

/// `[fleet] count_interval` when not given.
pub const DEFAULT_COUNT_INTERVAL_MS: u64 = 200;
/// The stream when `[fleet] stream` is not given.
pub const DEFAULT_STREAM: &str = "floodwatch:events";
/// Whether `name` may name a node (or travel as a rule name): letters, digits, '-', '_', '.',
/// 1 to 64 of them, so that it is safe in a log, a table and a file name.
pub fn is_node_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    !name.is_empty() && name.len() <= 64 && name.chars().all(ok)
}

/// The host name, when it is a valid node name (the default `[fleet] node`).
///
/// This is uname's node name, which is what `gethostname` returns on Linux.
pub fn host_name() -> Option<String> {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_str().ok()?;
    is_node_name(name).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_name_is_the_kernels() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let kernel = kernel.trim_end_matches('\n');
        let want = super::is_node_name(kernel).then(|| kernel.to_string());
        assert_eq!(super::host_name(), want);
    }
}
