//! A program of ours started on a free loopback port for a stage or a
//! benchmark to talk to: its output goes to a log file under `target/`, it
//! is polled until it answers, and it is killed when the guard is dropped,
//! whatever happened in between.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::effects::http::Request;
use crate::effects::paths;
use crate::effects::poll::{self, Poll};

/// A free port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A running server process; killed on drop.
pub struct LocalServer {
    name: String,
    child: Child,
    log: PathBuf,
    pub port: u16,
    /// When the process was spawned, for start-to-ready times.
    pub started: Instant,
}

impl LocalServer {
    /// Spawns `command`, which must listen on 127.0.0.1:`port`. Its stdout
    /// and stderr go to `target/local-servers/<name>.log`.
    pub fn spawn(name: &str, mut command: Command, port: u16) -> Result<LocalServer> {
        let dir = paths::target().join("local-servers");
        std::fs::create_dir_all(&dir)?;
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let started = Instant::now();
        let child = command.spawn().with_context(|| format!("cannot start {name}"))?;
        Ok(LocalServer { name: name.to_owned(), child, log, port, started })
    }

    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `GET path` every millisecond until it answers with `status`;
    /// returns the time since spawn. Fails if the process exits or
    /// `timeout` passes, quoting the end of its log.
    pub fn wait_for(&mut self, path: &str, status: u16, timeout: Duration) -> Result<Duration> {
        let authority = self.authority();
        let probe = Request::get(path).timeout(Duration::from_millis(500));
        let left = timeout.saturating_sub(self.started.elapsed());
        let waited = poll::until(left, Duration::from_millis(1), || {
            let seen = match probe.send(&authority) {
                Ok(r) if r.status == status => return Ok(Poll::Ready(self.started.elapsed())),
                Ok(r) => format!("answering {}", r.status),
                Err(e) => format!("failing ({e:#})"),
            };
            match self.child.try_wait()? {
                Some(exit) => bail!("exited ({exit})"),
                None => Ok(Poll::Pending(seen)),
            }
        });
        waited.map_err(|e| {
            anyhow!("{} did not answer {path} with {status}: {e:#}\n{}", self.name, self.log_tail())
        })
    }

    /// Resident set size in KiB, from `/proc/PID/status`.
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmRSS for {}", self.name))
    }

    /// The last lines the process wrote, for error messages.
    pub fn log_tail(&self) -> String {
        format!("--- {} (end) ---\n{}", self.log.display(), log_tail(&self.log))
    }
}

/// The last lines of a log file (empty when it cannot be read), for error
/// messages about a program we started.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
