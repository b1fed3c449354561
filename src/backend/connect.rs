//! Logging in to a shard: startup packet, authentication (trust, cleartext, MD5, SCRAM-SHA-256),
//! then ParameterStatus/BackendKeyData until the first ReadyForQuery.

use super::stream::ShardStream;
use crate::config::ShardTarget;
use crate::error::{sqlstate, PgError};
use crate::protocol::inspect;
use bytes::{Buf, BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a shard login failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to shard {shard} ({addr}): {source}")]
    Io {
        shard: String,
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out connecting to shard {shard} ({addr})")]
    Timeout { shard: String, addr: String },
    /// The shard refused the login; `fields` is its ErrorResponse, passed on to the client.
    #[error("shard {shard} refused the connection: {message}")]
    Refused {
        shard: String,
        message: String,
        code: String,
    },
    #[error("shard {shard} broke protocol during login: {what}")]
    Protocol { shard: String, what: String },
}

/// A logged-in connection, idle, with what the shard announced.
pub struct ShardConnection {
    pub stream: ShardStream,
    pub parameters: Vec<(String, String)>,
    /// The shard's BackendKeyData (pid, secret), for cancel requests.
    pub key: (i32, i32),
}

/// Connects and logs in. `extra_params` are startup parameters forwarded from the client
/// (application_name, options, DateStyle ...); user and database always come from the target.
pub async fn connect(
    target: &ShardTarget,
    extra_params: &[(String, String)],
    timeout: Duration,
) -> Result<ShardConnection, BackendError> {
    match tokio::time::timeout(timeout, login(target, extra_params)).await {
        Ok(result) => result,
        Err(_) => Err(BackendError::Timeout {
            shard: target.name.clone(),
            addr: target.describe(),
        }),
    }
}

async fn login(
    target: &ShardTarget,
    extra: &[(String, String)],
) -> Result<ShardConnection, BackendError> {
    let io_err = |source| BackendError::Io {
        shard: target.name.clone(),
        addr: target.describe(),
        source,
    };
    let proto = |what: String| BackendError::Protocol {
        shard: target.name.clone(),
        what,
    };
    let mut stream = ShardStream::open(target).await.map_err(io_err)?;

    let mut out = BytesMut::new();
    startup_message(target, extra, &mut out);
    stream.write_all(&out).await.map_err(io_err)?;
    stream.flush().await.map_err(io_err)?;

    let mut buf = BytesMut::with_capacity(1024);
    let mut scram: Option<ScramSha256> = None;
    let mut parameters = Vec::new();
    let mut key = (0, 0);
    let password = || {
        target
            .password
            .clone()
            .ok_or_else(|| BackendError::Refused {
                shard: target.name.clone(),
                message: "the shard asks for a password but its url has none".into(),
                code: "28P01".into(),
            })
    };
    loop {
        let (tag, body) = read_message(&mut stream, &mut buf).await.map_err(io_err)?;
        match tag {
            b'R' => {
                if body.len() < 4 {
                    return Err(proto("short authentication message".into()));
                }
                let code = i32::from_be_bytes(body[..4].try_into().expect("4 bytes"));
                let data = &body[4..];
                out.clear();
                match code {
                    0 => {}
                    3 => password_message(&password()?, &mut out),
                    5 => {
                        let salt: [u8; 4] =
                            data.try_into().map_err(|_| proto("bad md5 salt".into()))?;
                        let hash = postgres_protocol::authentication::md5_hash(
                            target.user.as_bytes(),
                            &password()?,
                            salt,
                        );
                        password_message(hash.as_bytes(), &mut out);
                    }
                    10 => {
                        let mechs: Vec<&[u8]> = data.split(|&b| b == 0).collect();
                        if !mechs.contains(&&b"SCRAM-SHA-256"[..]) {
                            return Err(proto("shard offers no SASL mechanism we support".into()));
                        }
                        let client = ScramSha256::new(&password()?, ChannelBinding::unsupported());
                        sasl_initial(client.message(), &mut out);
                        scram = Some(client);
                    }
                    11 => {
                        let client = scram
                            .as_mut()
                            .ok_or_else(|| proto("unexpected SASLContinue".into()))?;
                        client
                            .update(data)
                            .map_err(|e| proto(format!("SCRAM: {e}")))?;
                        sasl_response(client.message(), &mut out);
                    }
                    12 => {
                        let client = scram
                            .as_mut()
                            .ok_or_else(|| proto("unexpected SASLFinal".into()))?;
                        client
                            .finish(data)
                            .map_err(|e| proto(format!("SCRAM server signature: {e}")))?;
                    }
                    other => {
                        return Err(proto(format!("unsupported authentication request {other}")))
                    }
                }
                if !out.is_empty() {
                    stream.write_all(&out).await.map_err(io_err)?;
                    stream.flush().await.map_err(io_err)?;
                }
            }
            b'S' => {
                let (name, rest) =
                    inspect::cstr(&body).ok_or_else(|| proto("bad ParameterStatus".into()))?;
                let (value, _) =
                    inspect::cstr(rest).ok_or_else(|| proto("bad ParameterStatus".into()))?;
                parameters.push((name.to_string(), value.to_string()));
            }
            b'K' => {
                if body.len() < 8 {
                    return Err(proto("bad BackendKeyData".into()));
                }
                key = (
                    i32::from_be_bytes(body[..4].try_into().expect("4 bytes")),
                    i32::from_be_bytes(body[4..8].try_into().expect("4 bytes")),
                );
            }
            b'E' => {
                return Err(BackendError::Refused {
                    shard: target.name.clone(),
                    message: inspect::error_field(&body, b'M').unwrap_or("?").to_string(),
                    code: inspect::error_field(&body, b'C')
                        .unwrap_or("08006")
                        .to_string(),
                })
            }
            b'N' | b'v' => {}
            b'Z' => {
                return Ok(ShardConnection {
                    stream,
                    parameters,
                    key,
                })
            }
            other => {
                return Err(proto(format!(
                    "unexpected message {:?} during login",
                    other as char
                )))
            }
        }
    }
}

async fn read_message(
    stream: &mut ShardStream,
    buf: &mut BytesMut,
) -> std::io::Result<(u8, Vec<u8>)> {
    loop {
        if buf.len() >= 5 {
            let len = i32::from_be_bytes(buf[1..5].try_into().expect("4 bytes"));
            if !(4..=1 << 20).contains(&len) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("invalid message length {len} during login"),
                ));
            }
            let total = len as usize + 1;
            if buf.len() >= total {
                let tag = buf[0];
                buf.advance(5);
                let body = buf.split_to(total - 5).to_vec();
                return Ok((tag, body));
            }
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

fn startup_message(target: &ShardTarget, extra: &[(String, String)], out: &mut BytesMut) {
    let mut params = vec![
        ("user", target.user.as_str()),
        ("database", target.dbname.as_str()),
    ];
    params.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    crate::protocol::build::startup(196608, &params, out);
}

fn password_message(password: &[u8], out: &mut BytesMut) {
    out.put_u8(b'p');
    out.put_i32((4 + password.len() + 1) as i32);
    out.put_slice(password);
    out.put_u8(0);
}

fn sasl_initial(data: &[u8], out: &mut BytesMut) {
    let mech = b"SCRAM-SHA-256\0";
    out.put_u8(b'p');
    out.put_i32((4 + mech.len() + 4 + data.len()) as i32);
    out.put_slice(mech);
    out.put_i32(data.len() as i32);
    out.put_slice(data);
}

fn sasl_response(data: &[u8], out: &mut BytesMut) {
    out.put_u8(b'p');
    out.put_i32((4 + data.len()) as i32);
    out.put_slice(data);
}

/// What a client is told when the proxy could not log in to a shard for it.
pub fn shard_login_error(e: BackendError) -> PgError {
    match e {
        BackendError::Refused {
            shard,
            message,
            code,
        } => {
            let code: &'static str = match code.as_str() {
                // Keep the shard's class where a client can act on it.
                "3D000" => "3D000",
                "53300" => sqlstate::TOO_MANY_CONNECTIONS,
                "57P03" => "57P03",
                _ => sqlstate::CONNECTION_UNABLE,
            };
            PgError::fatal(
                code,
                format!("shard {shard} refused the connection: {message}"),
            )
        }
        other => PgError::fatal(sqlstate::CONNECTION_UNABLE, other.to_string())
            .with_hint("Check that the shard is running and reachable from the proxy."),
    }
}
