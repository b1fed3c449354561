//! Client authentication: what the proxy knows about each user, and the server side of the
//! SCRAM-SHA-256 and MD5 exchanges.
//!
//! Passwords are held only as SCRAM verifiers and MD5 hashes derived at load time; the plain text
//! from config is not kept. The exchanges are pure functions over bytes so they can be unit-tested
//! without sockets; `frontend::handshake` drives them over the wire.

pub mod md5;
pub mod scram;

use crate::config::{AuthMethod, UserConfig};

/// A user's credential as the proxy stores it.
#[derive(Clone)]
pub enum Credential {
    Trust,
    Scram(scram::Verifier),
    /// The `md5` + hex(md5(password + user)) string PostgreSQL stores.
    Md5(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Trust => "Credential::Trust",
            Credential::Scram(_) => "Credential::Scram(<redacted>)",
            Credential::Md5(_) => "Credential::Md5(<redacted>)",
        })
    }
}

impl Credential {
    /// Builds the stored credential for a configured user.
    pub fn from_config(user: &UserConfig) -> Result<Credential, String> {
        let password = user.password.as_deref();
        match (user.auth, password) {
            (AuthMethod::Trust, _) => Ok(Credential::Trust),
            (_, None) => Err("password is required unless auth = \"trust\"".into()),
            (AuthMethod::ScramSha256, Some(p)) if p.starts_with("SCRAM-SHA-256$") => {
                scram::Verifier::parse(p).map(Credential::Scram)
            }
            (AuthMethod::ScramSha256, Some(p)) if is_md5_hash(p) => Err(
                "an md5 hash cannot be used for scram-sha-256: give a plain password or a SCRAM verifier"
                    .into(),
            ),
            (AuthMethod::ScramSha256, Some(p)) => Ok(Credential::Scram(scram::Verifier::from_password(p))),
            (AuthMethod::Md5, Some(p)) if p.starts_with("SCRAM-SHA-256$") => Err(
                "a SCRAM verifier cannot be used for md5: give a plain password or an md5 hash".into(),
            ),
            (AuthMethod::Md5, Some(p)) if is_md5_hash(p) => Ok(Credential::Md5(p.to_string())),
            (AuthMethod::Md5, Some(p)) => Ok(Credential::Md5(postgres_protocol::password::md5(
                p.as_bytes(),
                &user.name,
            ))),
        }
    }
}

fn is_md5_hash(p: &str) -> bool {
    p.len() == 35 && p.starts_with("md5") && p[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The users the proxy accepts, looked up by name at each login.
#[derive(Debug, Clone, Default)]
pub struct UserDirectory {
    users: std::collections::HashMap<String, Credential>,
}

impl UserDirectory {
    pub fn from_config(users: &[UserConfig]) -> Result<UserDirectory, String> {
        let mut map = std::collections::HashMap::new();
        for u in users {
            map.insert(u.name.clone(), Credential::from_config(u)?);
        }
        Ok(UserDirectory { users: map })
    }

    pub fn get(&self, name: &str) -> Option<&Credential> {
        self.users.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(auth: AuthMethod, password: Option<&str>) -> UserConfig {
        UserConfig {
            name: "app".into(),
            password: password.map(String::from),
            auth,
        }
    }

    #[test]
    fn methods_and_password_forms() {
        assert!(matches!(
            Credential::from_config(&user(AuthMethod::Trust, None)),
            Ok(Credential::Trust)
        ));
        assert!(Credential::from_config(&user(AuthMethod::ScramSha256, None)).is_err());
        assert!(matches!(
            Credential::from_config(&user(AuthMethod::ScramSha256, Some("pw"))),
            Ok(Credential::Scram(_))
        ));
        let Ok(Credential::Md5(h)) = Credential::from_config(&user(AuthMethod::Md5, Some("pw")))
        else {
            panic!()
        };
        assert!(is_md5_hash(&h));
        assert!(Credential::from_config(&user(AuthMethod::ScramSha256, Some(&h))).is_err());
        let v = postgres_protocol::password::scram_sha_256(b"pw");
        assert!(Credential::from_config(&user(AuthMethod::Md5, Some(&v))).is_err());
    }
}
