//! A program of ours serving on a loopback port for a stage or a benchmark
//! to talk to — the service, the original Python stack, the image registry.
//! Its output goes to a log file under `target/local-servers/`, it is polled
//! until it answers, and it is stopped when the guard is dropped, whatever
//! happened in between, unless the caller [`keep`](LocalServer::keep)s it
//! running (as `up` does with the registry).

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::effects::http::Request;
use crate::effects::paths;
use crate::effects::poll::{self, Poll};
use crate::effects::process::{cmd, output};

/// A free port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A running server process; stopped on drop.
pub struct LocalServer {
    name: String,
    /// `None` once [`LocalServer::keep`] has let it go.
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
    /// How long a stop waits after SIGTERM before SIGKILL; zero kills at
    /// once.
    grace: Duration,
    pub port: u16,
    /// When the process was spawned, for start-to-ready times.
    pub started: Instant,
}

impl LocalServer {
    /// Spawns `command`, which must listen on 127.0.0.1:`port`. Its stdout
    /// and stderr go to `target/local-servers/<name>.log`.
    pub fn spawn(name: &str, mut command: Command, port: u16) -> Result<LocalServer> {
        let log = log_path(name);
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let started = Instant::now();
        let child = command.spawn().with_context(|| format!("cannot start {name}"))?;
        Ok(LocalServer {
            name: name.to_owned(),
            pid: child.id(),
            child: Some(child),
            log,
            grace: Duration::ZERO,
            port,
            started,
        })
    }

    /// Stops it with SIGTERM, and SIGKILL only after `grace`, for a server
    /// that must not be cut off mid-write.
    pub fn with_grace(mut self, grace: Duration) -> LocalServer {
        self.grace = grace;
        self
    }

    /// Leaves it running after the guard (and this process) is gone.
    pub fn keep(mut self) {
        self.child = None;
    }

    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Polls `GET path` every millisecond until it answers with `status`;
    /// returns the time since spawn. Fails if the process exits or
    /// `timeout` passes, quoting the end of its log.
    pub fn wait_for(&mut self, path: &str, status: u16, timeout: Duration) -> Result<Duration> {
        let authority = self.authority();
        let probe = Request::get(path).timeout(Duration::from_millis(500));
        let left = timeout.saturating_sub(self.started.elapsed());
        let started = self.started;
        let child = &mut self.child;
        let waited = poll::until(left, Duration::from_millis(1), || {
            let seen = match probe.send(&authority) {
                Ok(r) if r.status == status => return Ok(Poll::Ready(started.elapsed())),
                Ok(r) => format!("answering {}", r.status),
                Err(e) => format!("failing ({e:#})"),
            };
            match child.as_mut().map(Child::try_wait).transpose()?.flatten() {
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
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
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

/// Where the server `name` logs.
pub fn log_path(name: &str) -> PathBuf {
    paths::target().join("local-servers").join(format!("{name}.log"))
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
        let Some(mut child) = self.child.take() else { return };
        if !self.grace.is_zero() {
            let _ = output(cmd("kill", ["-TERM", &self.pid.to_string()]));
            let exited = poll::until(self.grace, Duration::from_millis(50), || {
                Ok(match child.try_wait()? {
                    Some(_) => Poll::Ready(()),
                    None => Poll::Pending("running".to_owned()),
                })
            });
            if exited.is_ok() {
                return;
            }
            eprintln!("{} ignored SIGTERM for {:?}; killing it", self.name, self.grace);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        // A zombie has exited; only its parent's wait is missing.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')').is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
        })
    }

    fn sleeper(name: &str) -> LocalServer {
        LocalServer::spawn(name, cmd("sleep", ["30"]), 0).unwrap()
    }

    #[test]
    fn a_dropped_guard_stops_its_process_and_a_kept_one_does_not() {
        let killed = sleeper("test-guard-kill");
        let pid = killed.pid();
        assert!(alive(pid));
        drop(killed);
        assert!(!alive(pid));

        let gentle = sleeper("test-guard-term").with_grace(Duration::from_secs(5));
        let pid = gentle.pid();
        let started = Instant::now();
        drop(gentle);
        assert!(!alive(pid));
        assert!(started.elapsed() < Duration::from_secs(4), "SIGTERM was not enough");

        let kept = sleeper("test-guard-keep");
        let pid = kept.pid();
        kept.keep();
        assert!(alive(pid));
        let _ = output(cmd("kill", ["-KILL", &pid.to_string()]));
    }

    #[test]
    fn waiting_for_a_process_that_exits_fails_with_its_log() {
        let port = free_port().unwrap();
        let c = cmd("sh", ["-c", "echo no such server; exit 3"]);
        let mut server = LocalServer::spawn("test-exits", c, port).unwrap();
        let err = server.wait_for("/", 200, Duration::from_secs(10)).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("exited"), "{text}");
        assert!(text.contains("no such server"), "{text}");
    }
}
