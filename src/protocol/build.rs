//! Encoding the messages the proxy originates (through pgwire's message codecs).
//!
//! Everything here appends to a caller-owned buffer so a reply of several messages goes out in
//! one write.

use crate::error::PgError;
use bytes::{BufMut, BytesMut};
use pgwire::messages::response::{ErrorResponse, NoticeResponse};
use pgwire::messages::startup::{Authentication, BackendKeyData, ParameterStatus, SecretKey};
use pgwire::messages::Message;

fn encode(msg: &impl Message, buf: &mut BytesMut) {
    // pgwire only fails to encode messages above its size limits; ours are tiny.
    msg.encode(buf).expect("proxy-generated message encodes");
}

pub fn error(err: &PgError, buf: &mut BytesMut) {
    encode(&ErrorResponse::new(err.fields()), buf);
}

/// A NoticeResponse with severity WARNING.
pub fn warning(code: &str, message: &str, buf: &mut BytesMut) {
    let fields = vec![
        (b'S', "WARNING".to_string()),
        (b'V', "WARNING".to_string()),
        (b'C', code.to_string()),
        (b'M', message.to_string()),
    ];
    encode(&NoticeResponse::new(fields), buf);
}

/// Written in place: one ends every answer, and six fixed bytes need no encoder.
pub fn ready_for_query(status: u8, buf: &mut BytesMut) {
    let status = match status {
        b'T' | b'E' => status,
        _ => b'I',
    };
    buf.extend_from_slice(&[b'Z', 0, 0, 0, 5, status]);
}

pub fn auth_ok(buf: &mut BytesMut) {
    encode(&Authentication::Ok, buf);
}

pub fn auth_md5(salt: [u8; 4], buf: &mut BytesMut) {
    encode(&Authentication::MD5Password(salt.to_vec()), buf);
}

pub fn auth_sasl(mechanisms: &[&str], buf: &mut BytesMut) {
    let mechanisms = mechanisms.iter().map(|m| m.to_string()).collect();
    encode(&Authentication::SASL(mechanisms), buf);
}

pub fn auth_sasl_continue(data: &[u8], buf: &mut BytesMut) {
    encode(&Authentication::SASLContinue(data.to_vec().into()), buf);
}

pub fn auth_sasl_final(data: &[u8], buf: &mut BytesMut) {
    encode(&Authentication::SASLFinal(data.to_vec().into()), buf);
}

pub fn parameter_status(name: &str, value: &str, buf: &mut BytesMut) {
    encode(
        &ParameterStatus::new(name.to_string(), value.to_string()),
        buf,
    );
}

pub fn backend_key_data(pid: i32, secret: i32, buf: &mut BytesMut) {
    encode(&BackendKeyData::new(pid, SecretKey::I32(secret)), buf);
}

/// NegotiateProtocolVersion: we speak 3.0 and none of the `_pq_.` options the client asked for.
pub fn negotiate_protocol_version(unsupported: &[String], buf: &mut BytesMut) {
    let start = buf.len();
    buf.put_u8(b'v');
    buf.put_i32(0);
    buf.put_i32(0);
    buf.put_i32(unsupported.len() as i32);
    for opt in unsupported {
        buf.put_slice(opt.as_bytes());
        buf.put_u8(0);
    }
    let len = (buf.len() - start - 1) as i32;
    buf[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

/// A StartupMessage (or, with another code, any untyped opening packet) with these parameters.
pub fn startup(code: u32, params: &[(&str, &str)], buf: &mut BytesMut) {
    let start = buf.len();
    buf.put_i32(0);
    buf.put_u32(code);
    for (k, v) in params {
        buf.put_slice(k.as_bytes());
        buf.put_u8(0);
        buf.put_slice(v.as_bytes());
        buf.put_u8(0);
    }
    buf.put_u8(0);
    let len = (buf.len() - start) as i32;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// A simple-protocol Query message (used toward shards).
pub fn query(sql: &str, buf: &mut BytesMut) {
    // Room for the whole message first: callers pass an empty buffer, which would otherwise
    // grow (and copy) at each put.
    buf.reserve(1 + 4 + sql.len() + 1);
    buf.put_u8(b'Q');
    buf.put_i32((4 + sql.len() + 1) as i32);
    buf.put_slice(sql.as_bytes());
    buf.put_u8(0);
}

/// A Parse message: statement `name`, its `sql`, and the parameter types it declares.
pub fn parse(name: &str, sql: &str, types: &[u32], buf: &mut BytesMut) {
    buf.put_u8(b'P');
    buf.put_i32((4 + name.len() + 1 + sql.len() + 1 + 2 + 4 * types.len()) as i32);
    buf.put_slice(name.as_bytes());
    buf.put_u8(0);
    buf.put_slice(sql.as_bytes());
    buf.put_u8(0);
    buf.put_i16(types.len() as i16);
    for t in types {
        buf.put_u32(*t);
    }
}

/// A RowDescription of text columns.
pub fn row_description_text(names: &[&str], buf: &mut BytesMut) {
    let start = buf.len();
    buf.put_u8(b'T');
    buf.put_i32(0);
    buf.put_i16(names.len() as i16);
    for n in names {
        buf.put_slice(n.as_bytes());
        buf.put_u8(0);
        buf.put_i32(0); // table oid
        buf.put_i16(0); // attnum
        buf.put_u32(25); // text
        buf.put_i16(-1);
        buf.put_i32(-1);
        buf.put_i16(0);
    }
    let len = (buf.len() - start - 1) as i32;
    buf[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

/// A DataRow of text values.
pub fn data_row_text(values: &[Option<&str>], buf: &mut BytesMut) {
    let start = buf.len();
    buf.put_u8(b'D');
    buf.put_i32(0);
    buf.put_i16(values.len() as i16);
    for v in values {
        match v {
            None => buf.put_i32(-1),
            Some(s) => {
                buf.put_i32(s.len() as i32);
                buf.put_slice(s.as_bytes());
            }
        }
    }
    let len = (buf.len() - start - 1) as i32;
    buf[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

/// CommandComplete with this tag.
pub fn command_complete(tag: &str, buf: &mut BytesMut) {
    buf.put_u8(b'C');
    buf.put_i32((4 + tag.len() + 1) as i32);
    buf.put_slice(tag.as_bytes());
    buf.put_u8(0);
}

/// A message with no body (ParseComplete '1', BindComplete '2', CloseComplete '3', NoData 'n',
/// EmptyQueryResponse 'I').
pub fn empty(tag: u8, buf: &mut BytesMut) {
    buf.put_u8(tag);
    buf.put_i32(4);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::inspect;

    #[test]
    fn ready_for_query_is_what_pgwire_encodes() {
        use pgwire::messages::response::{ReadyForQuery, TransactionStatus};
        for (status, expected) in [
            (b'I', TransactionStatus::Idle),
            (b'T', TransactionStatus::Transaction),
            (b'E', TransactionStatus::Error),
            (b'?', TransactionStatus::Idle),
        ] {
            let (mut ours, mut theirs) = (BytesMut::new(), BytesMut::new());
            ready_for_query(status, &mut ours);
            encode(&ReadyForQuery::new(expected), &mut theirs);
            assert_eq!(ours, theirs, "{}", status as char);
        }
    }

    #[test]
    fn error_round_trips_fields() {
        let mut buf = BytesMut::new();
        let err = PgError::error("0A000", "nope").with_hint("do this");
        error(&err, &mut buf);
        assert_eq!(buf[0], b'E');
        assert_eq!(inspect::error_field(&buf[5..], b'C'), Some("0A000"));
        assert_eq!(inspect::error_field(&buf[5..], b'H'), Some("do this"));
    }

    #[test]
    fn negotiate_layout() {
        let mut buf = BytesMut::new();
        negotiate_protocol_version(&["_pq_.x".into()], &mut buf);
        assert_eq!(buf[0], b'v');
        let len = i32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
        assert_eq!(len + 1, buf.len());
    }
}
