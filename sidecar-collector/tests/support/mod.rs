//! Process helpers for the collector's end-to-end tests: free ports, child
//! processes killed on drop (also when a test panics), artifact lookup.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills (SIGKILL) and reaps the child when dropped.
pub struct ChildGuard {
    pub child: Child,
    pub name: &'static str,
}

impl ChildGuard {
    /// Sends SIGTERM and waits up to `within` for a clean exit; returns its status code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The directory holding the workspace's binaries for this profile
/// (`$CARGO_TARGET_DIR/debug` or `target/debug`): where the collector binary
/// cargo built for this test lives.
pub fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sidecar-collector"))
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

pub fn collector_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sidecar-collector"))
}

/// The simulator binary next to ours; a clear failure when it was not built.
pub fn sim_bin() -> PathBuf {
    let path = bin_dir().join("vllm-sim");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p vllm-sim` (or `make native`)",
        path.display()
    );
    path
}

/// Starts one vllm-sim process serving `pods` on 127.0.0.1 with OS-chosen
/// ports; returns the guard and each pod's bound address, in order.
pub fn start_sims(pods: &[&str], extra: &[&str]) -> (ChildGuard, Vec<String>) {
    let mut command = Command::new(sim_bin());
    for pod in pods {
        command.arg("--pod").arg(format!("{pod}=127.0.0.1:0"));
    }
    command
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().expect("start vllm-sim");
    let stdout = child.stdout.take().unwrap();
    let guard = ChildGuard {
        child,
        name: "vllm-sim",
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut addresses = vec![String::new(); pods.len()];
    let deadline = Instant::now() + Duration::from_secs(20);
    while addresses.iter().any(String::is_empty) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("vllm-sim printed its listening lines in time");
        // `pod NAME listening on IP:PORT model M adapters [...]`
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() >= 5 && words[0] == "pod" && words[2] == "listening" {
            if let Some(i) = pods.iter().position(|p| *p == words[1]) {
                addresses[i] = words[4].to_owned();
            }
        }
    }
    (guard, addresses)
}
