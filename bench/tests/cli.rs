//! The binary's smoke mode and its input validation.

use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bench-routing"))
}

#[test]
fn quick_mode_writes_tables_json_and_plots() {
    let dir = std::env::temp_dir().join(format!("bench-routing-smoke-{}", std::process::id()));
    let out = bench()
        .args([
            "--quick",
            "--workloads",
            "shared-prefix,multi-lora",
            "--saturation",
            "shared-prefix=3,multi-lora=2",
            "--loads",
            "0.5",
            "--duration",
            "8",
            "--warmup",
            "2",
            "--seeds",
            "3-4",
            "--out",
        ])
        .arg(&dir)
        .output()
        .expect("run bench-routing");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = std::fs::read_to_string(dir.join("routing.md")).unwrap();
    for needle in [
        "## shared-prefix",
        "## multi-lora",
        "| round-robin |",
        "| ours |",
        "| gie-default |",
        "gie+lora",
        "gie+inflight",
        "oracle",
        " ± ",
        "Gateway replicas",
    ] {
        assert!(report.contains(needle), "report lacks {needle}:\n{report}");
    }
    let svg = std::fs::read_to_string(dir.join("routing-shared-prefix-ttft-p90.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("routing.json")).unwrap()).unwrap();
    // 2 workloads x 1 load x 8 policies x 2 seeds
    assert_eq!(json["points"].as_array().unwrap().len(), 32);
    assert_eq!(json["cells"].as_array().unwrap().len(), 16);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_flags_are_clear_errors() {
    for args in [
        vec!["--pods", "0"],
        vec!["--workloads", "nope"],
        vec!["--policies", "fastest"],
        vec!["--variant", "prefix=abc"],
        vec!["--variant", "colour=3"],
        vec!["--loads", "-1"],
        vec!["--saturation", "sharegpt"],
        vec!["--seeds", "9-2"],
        vec!["--workloads", "preamble-0"],
        vec!["--turns", "5-2"],
        vec!["--pressure-profile", "gpt-9"],
    ] {
        let out = bench().args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.trim().is_empty());
    }
}
