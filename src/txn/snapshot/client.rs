//! The oracle as a proxy uses it: embedded (a call, no round trip) or a standalone oracle over
//! TCP (one round trip per acquisition; releases are sent without waiting for an answer).
//!
//! A `Grant` releases itself when dropped, so a session that ends or fails in the middle of a
//! gated step cannot leave the gate closed.

use super::gate::Class;
use super::oracle::OracleService;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub enum Oracle {
    Embedded(Arc<OracleService>),
    Remote(Arc<Remote>),
}

/// A granted gate request (and its timestamp); released on drop.
pub struct Grant {
    pub ts: u64,
    hold: Option<Hold>,
}

enum Hold {
    Embedded(Arc<OracleService>),
    Remote(Arc<Remote>, Conn),
}

impl Drop for Grant {
    fn drop(&mut self) {
        match self.hold.take() {
            Some(Hold::Embedded(svc)) => svc.release(self.ts),
            Some(Hold::Remote(remote, conn)) => {
                tokio::spawn(async move { remote.release(conn).await });
            }
            None => {}
        }
    }
}

impl Grant {
    /// The holder can no longer tell when its commit window ends (its connection to the decider
    /// broke): keep the window closed until `gid` has no prepared branch left.
    pub fn orphan(mut self, gid: &str) {
        match self.hold.take() {
            Some(Hold::Embedded(svc)) => svc.orphan(self.ts, gid.to_string()),
            // Closing the connection without RELEASE makes the oracle keep the window for gid.
            Some(Hold::Remote(_, conn)) => drop(conn),
            None => {}
        }
    }
}

impl Oracle {
    /// Acquires the gate for `class` on `shards` (indexes into `names`). `gid`: the distributed
    /// transaction a commit window belongs to, so a standalone oracle can keep the window until
    /// recovery resolves it if this proxy dies.
    pub async fn acquire(
        &self,
        class: Class,
        shards: &[usize],
        names: &[String],
        gid: Option<&str>,
    ) -> Result<Grant, String> {
        match self {
            Oracle::Embedded(svc) => {
                let ts = svc.acquire(class, shards.to_vec()).await?;
                Ok(Grant {
                    ts,
                    hold: Some(Hold::Embedded(svc.clone())),
                })
            }
            Oracle::Remote(r) => {
                let names: Vec<&str> = shards.iter().map(|&s| names[s].as_str()).collect();
                let (ts, conn) = r.acquire(class, &names, gid).await?;
                Ok(Grant {
                    ts,
                    hold: Some(Hold::Remote(r.clone(), conn)),
                })
            }
        }
    }
}

type Conn = BufReader<TcpStream>;

/// Why a request failed: the connection (worth one retry on a fresh one) or the answer.
enum Failure {
    Connection(String),
    Answer(String),
}

impl Failure {
    fn message(self) -> String {
        match self {
            Failure::Connection(m) | Failure::Answer(m) => m,
        }
    }
}

/// A standalone oracle: a pool of connections, each carrying one grant at a time.
#[derive(Debug)]
pub struct Remote {
    pub addr: String,
    idle: Mutex<Vec<Conn>>,
    timeout: Duration,
}

impl Remote {
    pub fn new(addr: String, timeout: Duration) -> Remote {
        Remote {
            addr,
            idle: Mutex::new(Vec::new()),
            timeout,
        }
    }

    async fn acquire(
        &self,
        class: Class,
        shards: &[&str],
        gid: Option<&str>,
    ) -> Result<(u64, Conn), String> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let reused = pooled.is_some();
        match self.request(pooled, class, shards, gid).await {
            // A pooled connection may have died with a restarted oracle: one fresh try.
            Err(Failure::Connection(_)) if reused => self
                .request(None, class, shards, gid)
                .await
                .map_err(Failure::message),
            other => other.map_err(Failure::message),
        }
    }

    async fn request(
        &self,
        pooled: Option<Conn>,
        class: Class,
        shards: &[&str],
        gid: Option<&str>,
    ) -> Result<(u64, Conn), Failure> {
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let s = tokio::time::timeout(self.timeout, TcpStream::connect(&self.addr))
                    .await
                    .map_err(|_| {
                        Failure::Answer(format!(
                            "timed out connecting to the oracle at {}",
                            self.addr
                        ))
                    })?
                    .map_err(|e| {
                        Failure::Answer(format!("cannot reach the oracle at {}: {e}", self.addr))
                    })?;
                let _ = s.set_nodelay(true);
                BufReader::new(s)
            }
        };
        let line = format!(
            "ACQUIRE {} {} {}\n",
            match class {
                Class::Commit => "C",
                Class::Snapshot => "S",
            },
            gid.unwrap_or("-"),
            shards.join(",")
        );
        let started = Instant::now();
        let lost = |e: std::io::Error| {
            Failure::Connection(format!("lost the oracle at {}: {e}", self.addr))
        };
        conn.get_mut()
            .write_all(line.as_bytes())
            .await
            .map_err(lost)?;
        let mut answer = String::new();
        // Waiting for the gate can take as long as the conflicting windows; no timeout here.
        match conn.read_line(&mut answer).await {
            Ok(0) => {
                return Err(Failure::Connection(format!(
                    "the oracle at {} closed the connection",
                    self.addr
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(lost(e)),
        }
        metrics::histogram!(crate::metrics::ORACLE_RTT).record(started.elapsed().as_secs_f64());
        match answer.trim_end().split_once(' ') {
            Some(("GRANT", ts)) => ts
                .parse()
                .map(|ts| (ts, conn))
                .map_err(|_| Failure::Answer(format!("the oracle answered {answer:?}"))),
            Some(("ERR", msg)) => Err(Failure::Answer(format!("the oracle refused: {msg}"))),
            _ => Err(Failure::Answer(format!("the oracle answered {answer:?}"))),
        }
    }

    async fn release(&self, mut conn: Conn) {
        if conn.get_mut().write_all(b"RELEASE\n").await.is_ok() {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
    }
}
