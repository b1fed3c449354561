//! TLS to shards, as libpq reads `sslmode` and `sslrootcert` from a connection URL.
//!
//! - `disable`: plaintext.
//! - `prefer` (the default, as in libpq): TLS when the shard offers it, without checking its
//!   certificate; plaintext when it does not.
//! - `require`: TLS or no connection; the certificate is checked against `sslrootcert` when one
//!   is given (libpq does the same), not otherwise.
//! - `verify-ca`: TLS, the certificate chain checked against `sslrootcert`.
//! - `verify-full`: as verify-ca, and the certificate must name the host.
//!
//! Unix-socket shards never use TLS. Cancel requests go in plaintext, which PostgreSQL accepts
//! whatever its pg_hba.conf says.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// How to reach one shard over TLS.
#[derive(Clone)]
pub struct ShardTls {
    pub mode: Mode,
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ShardTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShardTls({:?})", self.mode)
    }
}

impl ShardTls {
    /// From the URL's `sslmode` (libpq's default when absent: prefer) and `sslrootcert`. None:
    /// plaintext.
    pub fn new(mode: Option<&str>, root_cert: Option<&str>) -> Result<Option<ShardTls>, String> {
        let mode = match mode.unwrap_or("prefer") {
            "disable" => return Ok(None),
            // allow tries plaintext first; prefer's order serves the same servers.
            "allow" | "prefer" => Mode::Prefer,
            "require" if root_cert.is_some() => Mode::VerifyCa,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => return Err(format!("sslmode={other} is not one libpq knows")),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (mode, root_cert) {
            (Mode::Prefer | Mode::Require, _) => Arc::new(AnyCertificate(provider.clone())),
            (_, None) => {
                return Err(format!(
                    "sslmode={} needs sslrootcert=<CA file> in the URL",
                    if mode == Mode::VerifyCa {
                        "verify-ca"
                    } else {
                        "verify-full"
                    }
                ))
            }
            (_, Some(path)) => {
                let mut roots = rustls::RootCertStore::empty();
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .and_then(|c| c.collect())
                    .map_err(|e| format!("sslrootcert {path}: {e}"))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!("sslrootcert {path}: no usable certificate in it"));
                }
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                )
                .build()
                .map_err(|e| format!("sslrootcert {path}: {e}"))?;
                if mode == Mode::VerifyFull {
                    webpki
                } else {
                    Arc::new(AnyName(webpki))
                }
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Some(ShardTls {
            mode,
            config: Arc::new(config),
        }))
    }

    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }

    /// Asks the shard for TLS on a fresh connection (SSLRequest) and takes the handshake.
    /// Ok(Err(tcp)): the shard declined and plaintext is acceptable.
    pub async fn negotiate(
        &self,
        mut tcp: TcpStream,
        host: &str,
    ) -> io::Result<Result<tokio_rustls::client::TlsStream<TcpStream>, TcpStream>> {
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
        match tcp.read_u8().await? {
            b'S' => {}
            b'N' if self.mode == Mode::Prefer => return Ok(Err(tcp)),
            b'N' => {
                return Err(io::Error::other(format!(
                    "the shard does not offer TLS, and sslmode={} requires it",
                    self.mode_name()
                )))
            }
            other => {
                return Err(io::Error::other(format!(
                    "unexpected answer {other} to the TLS request"
                )))
            }
        }
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::other(format!("host {host} as a TLS server name: {e}")))?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map(Ok)
    }
}

/// `sslmode` and `sslrootcert` taken out of a shard URL or key=value string, which is returned
/// without them (tokio-postgres's parser knows neither verify mode nor sslrootcert).
pub fn split_params(url: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            mode = Some(value);
            true
        }
        "sslrootcert" => {
            root = Some(value);
            true
        }
        _ => false,
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), None, None);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                !take(k, percent_decode(v))
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, mode, root);
    }
    let kept: Vec<&str> = url
        .split_whitespace()
        .filter(|word| match word.split_once('=') {
            Some((k, v)) => !take(k.trim(), v.trim_matches('\'').to_string()),
            None => true,
        })
        .collect();
    (kept.join(" "), mode, root)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// prefer and require without a CA: encryption without knowing who answers, as libpq does.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// verify-ca: the chain must lead to the CA; the name in the certificate is not checked.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_keys_come_out_of_urls_and_key_value_strings() {
        let (rest, mode, root) = split_params(
            "postgres://u@h:5432/db?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.crt",
        );
        assert_eq!(rest, "postgres://u@h:5432/db?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca.crt"));
        let (rest, mode, root) = split_params("host=h user=u sslmode=require dbname=db");
        assert_eq!(rest, "host=h user=u dbname=db");
        assert_eq!((mode.as_deref(), root), (Some("require"), None));
        let (rest, mode, _) = split_params("postgres://u@h/db?sslmode=disable");
        assert_eq!(
            (rest.as_str(), mode.as_deref()),
            ("postgres://u@h/db", Some("disable"))
        );
    }

    #[test]
    fn modes_as_libpq_reads_them() {
        assert!(ShardTls::new(Some("disable"), None).unwrap().is_none());
        assert_eq!(
            ShardTls::new(None, None).unwrap().unwrap().mode,
            Mode::Prefer
        );
        assert_eq!(
            ShardTls::new(Some("require"), None).unwrap().unwrap().mode,
            Mode::Require
        );
        let err = ShardTls::new(Some("verify-full"), None).unwrap_err();
        assert!(err.contains("sslrootcert"), "{err}");
        let err = ShardTls::new(Some("verify-ca"), Some("/nonexistent/ca.crt")).unwrap_err();
        assert!(err.contains("/nonexistent/ca.crt"), "{err}");
        assert!(ShardTls::new(Some("maybe"), None).is_err());
    }
}
