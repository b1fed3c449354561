//! Finding the PostgreSQL server binaries and running them as a user PostgreSQL accepts.

use super::LocalPgError;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A PostgreSQL installation (the directory holding initdb, pg_ctl and postgres).
#[derive(Debug, Clone)]
pub struct PgInstall {
    pub bin_dir: PathBuf,
    /// Set when running as root: programs run as this user through `runuser`.
    run_as: Option<String>,
}

impl PgInstall {
    /// `$SHARDGATE_PG_BIN` if set (and then only there), else the newest
    /// `/usr/lib/postgresql/*/bin`, else `pg_config --bindir`.
    pub fn find() -> Result<PgInstall, LocalPgError> {
        let bin_dir = candidates()
            .into_iter()
            .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
            .ok_or(LocalPgError::NotInstalled)?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        Ok(PgInstall {
            bin_dir,
            run_as: root.then(|| "postgres".to_string()),
        })
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// The server's major version, from `postgres --version`.
    pub fn version(&self) -> Result<String, LocalPgError> {
        let out = Command::new(self.bin("postgres"))
            .arg("--version")
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs a command as the data directories' owner and collects its output.
    pub fn run_as_owner(&self, cmd: &mut Command) -> Result<Output, LocalPgError> {
        let output = match &self.run_as {
            None => cmd.output()?,
            Some(user) => {
                let mut wrapped = Command::new("runuser");
                wrapped
                    .args(["-u", user, "--"])
                    .arg(cmd.get_program())
                    .args(cmd.get_args());
                for (k, v) in cmd.get_envs() {
                    if let Some(v) = v {
                        wrapped.env(k, v);
                    }
                }
                wrapped.output()?
            }
        };
        Ok(output)
    }

    /// Makes `dir` (and missing parents) and hands it to the owner user.
    pub fn make_owned_dir(&self, dir: &Path) -> Result<(), LocalPgError> {
        std::fs::create_dir_all(dir)?;
        if let Some(user) = &self.run_as {
            let out = Command::new("chown").arg(user).arg(dir).output()?;
            if !out.status.success() {
                return Err(LocalPgError::Command {
                    what: format!("chown {user} {}", dir.display()),
                    detail: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
        }
        Ok(())
    }

    /// Copies a data directory (as the owner, preserving modes).
    pub fn copy_dir(&self, from: &Path, to: &Path) -> Result<(), LocalPgError> {
        if let Some(parent) = to.parent() {
            self.make_owned_dir(parent)?;
        }
        let out = self.run_as_owner(Command::new("cp").arg("-a").arg(from).arg(to))?;
        if !out.status.success() {
            return Err(LocalPgError::Command {
                what: format!("copying {} to {}", from.display(), to.display()),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(())
    }

    /// An initdb'd template, made once per machine and installation, shared by all callers.
    /// Built in a private directory and renamed into place, so concurrent callers never see a
    /// half-made template.
    pub fn template(&self) -> Result<PathBuf, LocalPgError> {
        let tag: String = self
            .bin_dir
            .to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let root = std::env::temp_dir().join(format!("shardgate-pg-template-{}", unsafe {
            libc::geteuid()
        }));
        let final_dir = root.join(&tag);
        if final_dir.join("PG_VERSION").exists() {
            return Ok(final_dir);
        }
        self.make_owned_dir(&root)?;
        let scratch = root.join(format!(
            "{tag}.{}.{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let out = self.run_as_owner(
            Command::new(self.bin("initdb"))
                .arg("-D")
                .arg(&scratch)
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ]),
        )?;
        if !out.status.success() {
            return Err(LocalPgError::Command {
                what: "initdb".into(),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        if std::fs::rename(&scratch, &final_dir).is_err() {
            // Someone else finished first; theirs is as good as ours.
            let _ = std::fs::remove_dir_all(&scratch);
        }
        Ok(final_dir)
    }
}

fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(dir) = std::env::var("SHARDGATE_PG_BIN") {
        return vec![PathBuf::from(dir)];
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                Some((v, e.path().join("bin")))
            })
            .collect();
        versions.sort();
        out.extend(versions.into_iter().rev().map(|(_, p)| p));
    }
    if let Ok(o) = Command::new("pg_config").arg("--bindir").output() {
        if o.status.success() {
            out.push(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        }
    }
    out
}
