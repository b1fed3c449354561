//! The untyped packets that open a connection: SSLRequest, GSSENCRequest, CancelRequest and
//! StartupMessage. They carry a length and a 32-bit code instead of a tag byte.
//!
//! Limits follow PostgreSQL's own (`MAX_STARTUP_PACKET_LENGTH` = 10000 bytes), so a client cannot
//! make the proxy buffer an arbitrary amount before it has authenticated.

use crate::error::{sqlstate, PgError};
use std::collections::BTreeMap;
use tokio::io::{AsyncRead, AsyncReadExt};

const MAX_STARTUP_PACKET: usize = 10_000;
const SSL_REQUEST: u32 = 80877103;
const GSSENC_REQUEST: u32 = 80877104;
const CANCEL_REQUEST: u32 = 80877102;

/// One opening packet.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: i32,
        secret: i32,
    },
    Startup {
        /// Minor protocol version the client asked for (major is always 3 here).
        minor: u16,
        params: BTreeMap<String, String>,
    },
}

/// Reads one opening packet. `Ok(None)` means the client closed the connection before sending one.
pub async fn read_packet<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<StartupPacket>, PgError> {
    let mut len_buf = [0u8; 4];
    match r.read_exact(&mut len_buf).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(protocol_error(format!("reading startup packet: {e}"))),
    }
    let len = u32::from_be_bytes(len_buf) as usize;
    if !(8..=MAX_STARTUP_PACKET).contains(&len) {
        return Err(protocol_error(format!(
            "invalid length of startup packet: {len}"
        )));
    }
    let mut body = vec![0u8; len - 4];
    r.read_exact(&mut body)
        .await
        .map_err(|_| protocol_error("incomplete startup packet".into()))?;
    decode(&body).map(Some)
}

/// Decodes a packet body (everything after the length).
pub fn decode(body: &[u8]) -> Result<StartupPacket, PgError> {
    let code = u32::from_be_bytes(body[..4].try_into().expect("length checked"));
    let rest = &body[4..];
    match code {
        SSL_REQUEST => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST => {
            if rest.len() != 8 {
                return Err(protocol_error("invalid length of cancel request".into()));
            }
            Ok(StartupPacket::Cancel {
                pid: i32::from_be_bytes(rest[..4].try_into().expect("8 bytes")),
                secret: i32::from_be_bytes(rest[4..].try_into().expect("8 bytes")),
            })
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(protocol_error(format!(
                    "unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0"
                )));
            }
            Ok(StartupPacket::Startup {
                minor,
                params: decode_params(rest)?,
            })
        }
    }
}

fn decode_params(mut rest: &[u8]) -> Result<BTreeMap<String, String>, PgError> {
    let mut params = BTreeMap::new();
    loop {
        let (key, after) = super::inspect::cstr(rest).ok_or_else(|| {
            protocol_error("invalid startup packet layout: expected terminator as last byte".into())
        })?;
        if key.is_empty() {
            if !after.is_empty() {
                return Err(protocol_error(
                    "invalid startup packet layout: trailing bytes".into(),
                ));
            }
            return Ok(params);
        }
        let (value, after) = super::inspect::cstr(after).ok_or_else(|| {
            protocol_error(format!("invalid startup packet: no value for {key:?}"))
        })?;
        params.insert(key.to_string(), value.to_string());
        rest = after;
    }
}

fn protocol_error(message: String) -> PgError {
    PgError::fatal(sqlstate::PROTOCOL_VIOLATION, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packet body (after the length) as `decode` receives it.
    fn startup(code: u32, params: &[(&str, &str)]) -> Vec<u8> {
        let mut buf = bytes::BytesMut::new();
        crate::protocol::build::startup(code, params, &mut buf);
        buf[4..].to_vec()
    }

    #[test]
    fn decodes_startup_params() {
        let p = decode(&startup(196608, &[("user", "app"), ("database", "db")])).unwrap();
        let StartupPacket::Startup { minor, params } = p else {
            panic!("{p:?}")
        };
        assert_eq!(minor, 0);
        assert_eq!(params["user"], "app");
    }

    #[test]
    fn rejects_wrong_major_version() {
        let err = decode(&startup(2 << 16, &[])).unwrap_err();
        assert_eq!(err.code, "08P01");
        assert!(err.message.contains("unsupported frontend protocol 2.0"));
    }

    #[test]
    fn rejects_unterminated_params() {
        let mut body = startup(196608, &[("user", "app")]);
        body.pop();
        body.pop();
        assert!(decode(&body).is_err());
    }

    #[test]
    fn decodes_cancel_and_ssl() {
        let mut body = CANCEL_REQUEST.to_be_bytes().to_vec();
        body.extend_from_slice(&7i32.to_be_bytes());
        body.extend_from_slice(&9i32.to_be_bytes());
        assert_eq!(
            decode(&body).unwrap(),
            StartupPacket::Cancel { pid: 7, secret: 9 }
        );
        assert_eq!(
            decode(&SSL_REQUEST.to_be_bytes()).unwrap(),
            StartupPacket::SslRequest
        );
    }
}
