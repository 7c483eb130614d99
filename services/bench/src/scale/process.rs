//! The `pinhive serve` child process a scale run measures: spawned from this very executable
//! with simulated IPFS nodes on a free port, stopped with SIGTERM or SIGKILL, and killed when
//! its guard drops so that no run leaves a server behind.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How to start the server; each start picks a fresh free port.
pub struct ServerSpec {
    pub data_dir: PathBuf,
    pub partitions: u32,
    pub simulated_nodes: usize,
    /// The servers' stderr, appended across restarts (shown when a server dies early).
    pub log_file: PathBuf,
}

/// A running server. Dropping it kills the process (SIGKILL) and reaps it.
pub struct ServerProcess {
    child: Option<Child>,
    pub pid: u32,
    pub url: String,
    log_file: PathBuf,
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

impl ServerProcess {
    pub fn spawn(spec: &ServerSpec) -> anyhow::Result<Self> {
        let listen = free_addr()?;
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_file)
            .with_context(|| format!("opening {}", spec.log_file.display()))?;
        let mut command = Command::new(std::env::current_exe()?);
        // Only the flags below configure the child: no config file, Kafka URL or OTLP endpoint
        // from this shell's environment leaks into the measured process.
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("PINHIVE_") || key_text.starts_with("OTEL_") {
                command.env_remove(&key);
            }
        }
        command
            .arg("serve")
            .args(["--ipfs-simulated", &spec.simulated_nodes.to_string()])
            .args(["--partitions", &spec.partitions.to_string()])
            // The load is one token at full speed: no rate limit.
            .args(["--rate-limit-per-sec", "0"])
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .args(["--listen", &listen.to_string()])
            .env("PINHIVE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = command.spawn().context("starting pinhive serve")?;
        Ok(ServerProcess {
            pid: child.id(),
            child: Some(child),
            url: format!("http://{listen}"),
            log_file: spec.log_file.clone(),
        })
    }

    /// Fails (with the tail of the server log) if the process has exited.
    pub fn ensure_alive(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            anyhow::bail!("the server was already stopped");
        };
        if let Some(status) = child.try_wait()? {
            self.child = None;
            anyhow::bail!(
                "pinhive serve (pid {}) exited with {status}; last lines of {}:\n{}",
                self.pid,
                self.log_file.display(),
                log_tail(&self.log_file, 20)
            );
        }
        Ok(())
    }

    /// SIGTERM, then waits for a clean exit; returns how long the shutdown took.
    pub fn terminate(mut self, deadline: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        send_signal(self.pid, libc::SIGTERM)?;
        let mut child = self
            .child
            .take()
            .context("the server was already stopped")?;
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::ensure!(
                    status.success(),
                    "pinhive serve exited with {status} after SIGTERM; see {}",
                    self.log_file.display()
                );
                return Ok(started.elapsed());
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("pinhive serve did not exit within {deadline:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (a crash: nothing is flushed or drained) and reaps the process.
    pub fn kill_hard(mut self) -> anyhow::Result<()> {
        let mut child = self
            .child
            .take()
            .context("the server was already stopped")?;
        child.kill().context("SIGKILL")?;
        child.wait().context("reaping the killed server")?;
        Ok(())
    }

    /// Resident set size (VmRSS) in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        rss_bytes(self.pid)
    }

    /// User + system CPU time the server used so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time(&format!("/proc/{}/stat", self.pid))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn send_signal(pid: u32, signal: libc::c_int) -> anyhow::Result<()> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: kill(2) takes plain integers; the pid is our own unreaped child, so it cannot
    // have been recycled for another process.
    let result = unsafe { libc::kill(pid, signal) };
    anyhow::ensure!(
        result == 0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line in /proc/PID/status")?;
    Ok(kib * 1024)
}

/// utime + stime of a `/proc/.../stat` file.
fn cpu_time(stat_path: &str) -> anyhow::Result<Duration> {
    let stat =
        std::fs::read_to_string(stat_path).with_context(|| format!("reading {stat_path}"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index)
            .and_then(|f| f.parse().ok())
            .context("malformed stat")
    };
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the name.
    let total_ticks = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_secs_f64(
        total_ticks as f64 / per_second as f64,
    ))
}

/// CPU time this process (the load generator) used so far.
pub fn own_cpu_time() -> anyhow::Result<Duration> {
    cpu_time("/proc/self/stat")
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Total size of the files under `dir`.
pub fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in
            std::fs::read_dir(&current).with_context(|| format!("listing {}", current.display()))?
        {
            let entry = entry?;
            let metadata = entry.metadata()?;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                total += metadata.len();
            }
        }
    }
    Ok(total)
}
