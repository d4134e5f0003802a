//! The official `openai` Python client and `prometheus_client`'s parser
//! against the `vllm-sim` binary (script: tests/python/check_openai.py).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the child process however the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn venv_python() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = std::env::var_os("LLMGW_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join(".venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./scripts/setup.sh (it creates the venv with openai and prometheus_client)",
        python.display()
    );
    python
}

#[test]
fn official_openai_client_and_prometheus_parser_agree_with_the_simulator() {
    let python = venv_python();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_vllm-sim"))
            .args([
                "--pod",
                "sim-py=127.0.0.1:0",
                "--lora-modules",
                "sql-lora=/adapters/sql",
                "--max-loras",
                "1",
                "--time-scale",
                "0.2",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("vllm-sim starts"),
    );
    // "pod sim-py listening on 127.0.0.1:PORT model M adapters [...]"
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("startup line");
    let addr = line
        .split_whitespace()
        .nth(4)
        .unwrap_or_else(|| panic!("unexpected startup line {line:?}"));
    assert!(line.starts_with("pod sim-py listening on "), "{line}");

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/check_openai.py");
    let out_file = tempfile::NamedTempFile::new().unwrap();
    let err_file = tempfile::NamedTempFile::new().unwrap();
    let mut py = KillOnDrop(
        Command::new(&python)
            .arg(&script)
            .arg(format!("http://{addr}"))
            .arg("meta-llama/Llama-3.1-8B-Instruct")
            .arg("sql-lora")
            .stdout(out_file.reopen().unwrap())
            .stderr(err_file.reopen().unwrap())
            .spawn()
            .expect("python starts"),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = py.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "python check timed out"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(out_file.path()).unwrap();
    let stderr = std::fs::read_to_string(err_file.path()).unwrap();
    assert!(status.success(), "python check failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("checks passed"), "{stdout}");
    println!("{stdout}");
}
