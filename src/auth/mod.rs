//! Client authentication: what the proxy knows about each user, and the server side of the
//! SCRAM-SHA-256 and MD5 exchanges.
//!
//! Passwords are held only as SCRAM verifiers and MD5 hashes derived at load time; the plain text
//! from config is not kept. The exchanges are pure functions over bytes so they can be unit-tested
//! without sockets; `frontend::handshake` drives them over the wire.

pub mod md5;
pub mod scram;
pub mod throttle;
mod user;

pub use user::{AuthMethod, UserConfig};

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
#[derive(Clone)]
pub struct UserDirectory {
    users: std::collections::HashMap<String, Credential>,
    /// The challenge an unknown user gets: the one most configured users get, so a name's
    /// existence cannot be read off the method.
    unknown_method: AuthMethod,
    /// Random per process: derives the stable fake salt of each unknown user name.
    secret: [u8; 32],
    /// Users whose sessions start in a consistency of their own (`[[users]] consistency`).
    consistency: std::collections::HashMap<String, String>,
    /// Users with `admin = true`.
    admins: std::collections::HashSet<String>,
}

impl std::fmt::Debug for UserDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserDirectory")
            .field("users", &self.users.len())
            .field("unknown_method", &self.unknown_method)
            .finish_non_exhaustive()
    }
}

impl Default for UserDirectory {
    fn default() -> Self {
        UserDirectory::from_config(&[]).expect("no users to reject")
    }
}

impl UserDirectory {
    pub fn from_config(users: &[UserConfig]) -> Result<UserDirectory, String> {
        let mut map = std::collections::HashMap::new();
        for u in users {
            map.insert(u.name.clone(), Credential::from_config(u)?);
        }
        let md5 = users.iter().filter(|u| u.auth == AuthMethod::Md5).count();
        let scram = users
            .iter()
            .filter(|u| u.auth == AuthMethod::ScramSha256)
            .count();
        Ok(UserDirectory {
            users: map,
            unknown_method: if md5 > scram {
                AuthMethod::Md5
            } else {
                AuthMethod::ScramSha256
            },
            secret: rand::random(),
            consistency: users
                .iter()
                .filter_map(|u| Some((u.name.clone(), u.consistency.clone()?)))
                .collect(),
            admins: users
                .iter()
                .filter(|u| u.admin)
                .map(|u| u.name.clone())
                .collect(),
        })
    }

    /// The directory of `users`, keeping this one's secret so that an unknown user's challenge
    /// stays the same across a reload.
    pub fn reloaded(&self, users: &[UserConfig]) -> Result<UserDirectory, String> {
        let mut next = UserDirectory::from_config(users)?;
        next.secret = self.secret;
        Ok(next)
    }

    /// Whether `name` may use the admin console.
    pub fn is_admin(&self, name: &str) -> bool {
        self.admins.contains(name)
    }

    /// The consistency `name`'s sessions start in, when the config gives the user one.
    pub fn consistency(&self, name: &str) -> Option<&str> {
        self.consistency.get(name).map(String::as_str)
    }

    pub fn get(&self, name: &str) -> Option<&Credential> {
        self.users.get(name)
    }

    /// What an unknown user is challenged with: a credential no password matches, shaped like a
    /// real one (the common method; for SCRAM, a salt that is the same at every attempt).
    pub fn unknown(&self, name: &str) -> Credential {
        match self.unknown_method {
            AuthMethod::Md5 => {
                // A hash of random bytes: no password's md5 matches it.
                let noise: [u8; 16] = rand::random();
                let hex: String = noise.iter().map(|b| format!("{b:02x}")).collect();
                Credential::Md5(format!("md5{hex}"))
            }
            _ => Credential::Scram(scram::Verifier::mock(&self.secret, name)),
        }
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
            consistency: None,
            admin: false,
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
