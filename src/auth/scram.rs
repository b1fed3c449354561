//! Server side of SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL speaks it.
//!
//! The proxy has no TLS yet, so it offers only `SCRAM-SHA-256` (never `-PLUS`) and refuses a
//! client that demands channel binding (`p=` in the GS2 header). The user name in the SCRAM
//! message is ignored, as PostgreSQL does: the startup packet's `user` is authoritative.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

const ITERATIONS_FOR_MOCK: u32 = 4096;

/// A stored SCRAM verifier: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
#[derive(Clone)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl Verifier {
    pub fn parse(s: &str) -> Result<Verifier, String> {
        let bad = || "malformed SCRAM-SHA-256 verifier".to_string();
        let rest = s.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
        let (iter_salt, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iterations, salt) = iter_salt.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let key = |k: &str| -> Result<[u8; 32], String> {
            B64.decode(k)
                .map_err(|_| bad())?
                .try_into()
                .map_err(|_| bad())
        };
        Ok(Verifier {
            iterations: iterations.parse().map_err(|_| bad())?,
            salt: B64.decode(salt).map_err(|_| bad())?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }

    /// Derives a verifier (random salt, 4096 iterations) from a plain password.
    pub fn from_password(password: &str) -> Verifier {
        Verifier::parse(&postgres_protocol::password::scram_sha_256(
            password.as_bytes(),
        ))
        .expect("postgres-protocol produces well-formed verifiers")
    }

    /// A verifier no password matches, used for unknown users so the exchange looks the same.
    /// Its salt is derived from the user name with a server secret: a real user's salt is the
    /// same at every attempt, so an unknown user's must be too.
    pub fn mock(secret: &[u8], user: &str) -> Verifier {
        let salt = hmac(secret, format!("mock salt\0{user}").as_bytes());
        Verifier {
            iterations: ITERATIONS_FOR_MOCK,
            salt: salt[..16].to_vec(),
            stored_key: random_bytes(32).try_into().expect("32 bytes"),
            server_key: random_bytes(32).try_into().expect("32 bytes"),
        }
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    use rand::Rng;
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    v
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// Why an exchange failed. `Failed` is a wrong password; the others are protocol errors.
#[derive(Debug, PartialEq, Eq)]
pub enum ScramError {
    Malformed(&'static str),
    ChannelBindingUnsupported,
    Failed,
}

/// One server-side exchange, from client-first to server-final.
pub struct Exchange {
    verifier: Verifier,
    client_first_bare: String,
    server_first: String,
    gs2_header: String,
    nonce: String,
}

impl Exchange {
    /// Takes the client-first message; returns the exchange and the server-first message.
    pub fn start(
        verifier: Verifier,
        client_first: &[u8],
    ) -> Result<(Exchange, String), ScramError> {
        let msg =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header = cbind-flag "," [authzid] ","
        let (cbind, rest) = msg
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        match cbind {
            "n" | "y" => {}
            c if c.starts_with("p=") => return Err(ScramError::ChannelBindingUnsupported),
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        if !authzid.is_empty() {
            return Err(ScramError::Malformed(
                "authorization identity is not supported",
            ));
        }
        let client_nonce = bare
            .split(',')
            .find_map(|attr| attr.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramError::Malformed("no client nonce"))?;
        let nonce = format!("{client_nonce}{}", B64.encode(random_bytes(18)));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        let gs2_header = format!("{cbind},{authzid},");
        let exchange = Exchange {
            verifier,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            gs2_header,
            nonce,
        };
        Ok((exchange, server_first))
    }

    /// Takes the client-final message; returns the server-final message if the proof is right.
    pub fn finish(self, client_final: &[u8]) -> Result<String, ScramError> {
        let msg =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut channel = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                channel = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                nonce = Some(r);
            }
        }
        if channel != Some(B64.encode(self.gs2_header.as_bytes()).as_str()) {
            return Err(ScramError::Malformed("channel binding does not match"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("bad proof"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let stored_key: [u8; 32] = Sha256::digest(&client_key).into();
        if !super::md5::constant_time_eq(&stored_key, &self.verifier.stored_key) {
            return Err(ScramError::Failed);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn run(verifier: Verifier, password: &[u8]) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(password, ChannelBinding::unsupported());
        let (ex, server_first) = Exchange::start(verifier, client.message())?;
        client.update(server_first.as_bytes()).unwrap();
        let server_final = ex.finish(client.message())?;
        client
            .finish(server_final.as_bytes())
            .expect("client accepts server signature");
        Ok(())
    }

    #[test]
    fn right_password_passes_both_ways() {
        assert_eq!(run(Verifier::from_password("s3cret"), b"s3cret"), Ok(()));
    }

    #[test]
    fn wrong_password_fails() {
        assert_eq!(
            run(Verifier::from_password("s3cret"), b"nope"),
            Err(ScramError::Failed)
        );
        assert_eq!(
            run(Verifier::mock(b"secret", "u"), b"anything"),
            Err(ScramError::Failed)
        );
    }

    #[test]
    fn channel_binding_demand_is_refused() {
        let r = Exchange::start(
            Verifier::mock(b"secret", "u"),
            b"p=tls-server-end-point,,n=,r=abc",
        );
        assert_eq!(r.err(), Some(ScramError::ChannelBindingUnsupported));
    }

    #[test]
    fn stored_verifier_parses() {
        let v = postgres_protocol::password::scram_sha_256(b"pw");
        assert_eq!(run(Verifier::parse(&v).unwrap(), b"pw"), Ok(()));
        assert!(Verifier::parse("SCRAM-SHA-256$x").is_err());
    }
}
