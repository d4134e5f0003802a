//! Child processes that cannot outlive their owner: each runs in its own process
//! group and is killed (group-wide) when its guard drops, also while a panicking
//! test unwinds; on Linux the kernel also kills it if the owner dies outright.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A running child process with its output captured in a log file.
pub struct ManagedProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
}

impl ManagedProcess {
    /// Starts `program args...` with stdout and stderr appended to
    /// `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log_dir: &Path) -> Result<Self> {
        let log_path = log_dir.join(format!("{name}.log"));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no Rust state; it only
        // asks the kernel to SIGKILL the child when the spawning thread exits.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}: {}", program.display()))?;
        Ok(Self {
            name: name.to_string(),
            child,
            log_path,
        })
    }

    /// The name the process was started with (also its log file's stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Process id (and process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (and reaps it if so).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `max_bytes` of the process's output, for error messages.
    pub fn log_tail(&self, max_bytes: usize) -> String {
        let text = std::fs::read(&self.log_path).unwrap_or_default();
        let start = text.len().saturating_sub(max_bytes);
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    /// Path of the process's log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// SIGTERM to the group, up to `grace` for it to exit, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        if self.has_exited() {
            return;
        }
        let group = -(self.child.id() as libc::pid_t);
        // SAFETY: plain syscalls on the group this guard created.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.has_exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}
