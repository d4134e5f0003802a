//! CPU time a process has used, from `/proc/<pid>/stat`: the figure that
//! separates the filter's cost from how the machine's cores happen to be
//! shared between the load generator, the upstream and the Envoys.

use std::time::Duration;

use anyhow::{Context, Result};

/// User + system CPU time of every thread of `pid` so far.
pub fn process_cpu(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: the
    // fields counted below start after its closing parenthesis.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc stat line")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("short /proc stat line")?
            .parse::<u64>()
            .context("non-numeric CPU time in /proc stat")
    };
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    anyhow::ensure!(per_second > 0, "sysconf(_SC_CLK_TCK) failed");
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(total as f64 / per_second as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_cpu_and_it_grows() {
        let before = process_cpu(std::process::id()).unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = process_cpu(std::process::id()).unwrap();
        assert!(after > before, "{before:?} -> {after:?}");
        assert!(process_cpu(u32::MAX).is_err());
    }
}
