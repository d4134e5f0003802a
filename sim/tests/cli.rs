//! The `vllm-sim` binary: startup line, pods file, busy port, bad flags, signals.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vllm-sim"))
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(start.elapsed() < limit, "process did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_to_end(cmd: &mut Command) -> (std::process::ExitStatus, String) {
    let mut child = KillOnDrop(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let status = wait_exit(&mut child.0, Duration::from_secs(20));
    let mut err = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    (status, err)
}

#[test]
fn busy_port_fails_with_a_clear_message() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (status, err) =
        run_to_end(sim().args(["--pod", "a=127.0.0.1:0", "--pod", &format!("b={addr}")]));
    assert!(!status.success());
    assert!(
        err.contains(&format!("pod b: cannot listen on {addr}")),
        "{err}"
    );
}

#[test]
fn bad_arguments_are_explained() {
    let (status, err) = run_to_end(&mut sim());
    assert!(!status.success());
    assert!(err.contains("no pods"), "{err}");
    let (status, err) =
        run_to_end(sim().args(["--pod", "a=127.0.0.1:0", "--profile", "h200-dreams"]));
    assert!(!status.success());
    assert!(err.contains("built-in"), "{err}");
    let (status, err) = run_to_end(sim().args(["--pod", "a=127.0.0.1:0", "--time-scale=-1"]));
    assert!(!status.success());
    assert!(err.contains("time scale"), "{err}");
}

#[test]
fn pods_file_starts_every_pod_and_sigterm_exits_cleanly() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(
        file,
        "pods:\n  - name: alpha\n    listen: 127.0.0.1:0\n    lora_modules: [food-review]\n    max_loras: 2\n  - name: beta\n    listen: 127.0.0.2:0\n    profile: llama-3.1-70b-4xh100\n    faults: {{pause_engine: true}}\n"
    )
    .unwrap();
    let mut child = KillOnDrop(
        sim()
            .args(["--pods-file", file.path().to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let a = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let b = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        a.starts_with("pod alpha listening on 127.0.0.1:") && a.ends_with("adapters [food-review]"),
        "{a}"
    );
    assert!(
        b.starts_with("pod beta listening on 127.0.0.2:") && b.ends_with("adapters []"),
        "{b}"
    );
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = wait_exit(&mut child.0, Duration::from_secs(20));
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
}
