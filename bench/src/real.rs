//! A real allocation-heavy program: jq over a JSON file the harness generates, timed as the
//! wall time of the whole process, untraced and under each tool.

use std::{
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use leaktrace::process::launch;

use crate::{
    proc,
    tools::{self, Env},
};

/// The jq program: keep the active records, group them by kind (a sort), and per kind count
/// them, sum a number, collect and sort the tags and take a maximum; the whole input is parsed
/// into jq's values first, one allocation or more per value.
pub const JQ_FILTER: &str = "map(select(.active)) | group_by(.kind) | map({kind: .[0].kind, count: length, \
     score: (map(.score) | add), tags: ([.[].tags[]] | unique), last: (map(.history[-1].t // 0) | max)})";

/// The input file: what was generated.
pub struct Input {
    /// Its path.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Records (objects of the top-level array).
    pub records: u64,
}

/// splitmix64: the same numbers on every machine and run.
struct Numbers(u64);

impl Numbers {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes a JSON array of records (about 240 bytes each: strings, numbers, booleans, a
/// nested object and two arrays of varying length) until it holds at least `target_bytes`.
/// The same size gives the same file.
pub fn generate_input(path: &Path, target_bytes: u64) -> Result<Input> {
    let mut n = Numbers(0x6c65_616b_7472_6163);
    let mut text = String::with_capacity(target_bytes as usize + 1024);
    text.push('[');
    let mut records = 0u64;
    while (text.len() as u64) < target_bytes {
        if records > 0 {
            text.push_str(",\n");
        }
        let _ = write!(
            text,
            "{{\"id\":{records},\"name\":\"user-{records}-{:08x}\",\"kind\":\"k{}\",\"active\":{},\"score\":{}.{:02},\"tags\":[",
            n.next() as u32,
            n.below(16),
            n.below(3) != 0,
            n.below(1000),
            n.below(100)
        );
        for i in 0..n.below(6) {
            let _ = write!(text, "{}\"t{}\"", if i > 0 { "," } else { "" }, n.below(50));
        }
        let _ = write!(
            text,
            "],\"attrs\":{{\"region\":\"r{}\",\"level\":{},\"note\":\"n{:x}\"}},\"history\":[",
            n.below(8),
            n.below(10),
            n.next() as u32
        );
        for i in 0..n.below(5) {
            let _ = write!(
                text,
                "{}{{\"t\":{},\"v\":{}}}",
                if i > 0 { "," } else { "" },
                1_600_000_000 + n.below(1_000_000),
                n.below(1000)
            );
        }
        text.push_str("]}");
        records += 1;
    }
    text.push_str("]\n");
    let mut file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(Input { path: path.to_path_buf(), bytes: text.len() as u64, records })
}

/// `jq -c FILTER FILE`.
pub fn jq_args(input: &Input) -> Vec<String> {
    vec!["-c".into(), JQ_FILTER.into(), input.path.display().to_string()]
}

/// One timed run: the wall time of the whole process, and what it printed on stdout (jq's
/// output, with whatever the tool prints there).
pub struct Run {
    /// Seconds from spawning the command (for memleak: from letting jq exec) to its exit.
    pub wall_s: f64,
    /// Standard output.
    pub stdout: String,
}

fn timed(command: &mut Command) -> Result<Run> {
    let t0 = Instant::now();
    let stdout = proc::output(command.stderr(Stdio::null()))?;
    Ok(Run { wall_s: t0.elapsed().as_secs_f64(), stdout })
}

/// jq alone.
pub fn untraced(input: &Input) -> Result<Run> {
    timed(Command::new("jq").args(jq_args(input)))
}

/// `leaktrace 3600 -- jq …`: launch mode (jq held before exec until the probes are attached),
/// no interval report, the final report when jq exits; leaktrace's start-up and final report
/// are part of the time.
pub fn leaktrace(env: &Env, input: &Input) -> Result<Run> {
    timed(Command::new(&env.leaktrace).arg("3600").arg("--").arg("jq").args(jq_args(input)))
}

/// valgrind memcheck (the one-shot run's options) launching jq.
pub fn valgrind(env: &Env, input: &Input) -> Result<Run> {
    timed(tools::valgrind_command(&env.scratch.join("memcheck-jq.xml")).arg("jq").args(jq_args(input)))
}

/// `heaptrack -o FILE jq …`; the data file is FILE.zst.
pub fn heaptrack(env: &Env, input: &Input) -> Result<(Run, PathBuf)> {
    let base = env.scratch.join("heaptrack-jq");
    let data = env.scratch.join("heaptrack-jq.zst");
    let _ = std::fs::remove_file(&data);
    let run = timed(Command::new("heaptrack").arg("-o").arg(&base).arg("jq").args(jq_args(input)))?;
    Ok((run, data))
}

/// Allocation calls heaptrack recorded ("calls to allocation functions: N" of heaptrack_print).
pub fn heaptrack_alloc_calls(data: &Path) -> Option<u64> {
    let summary =
        proc::output(Command::new("heaptrack_print").arg("-f").arg(data).args(["-p", "0", "-a", "0", "-T", "0"]))
            .ok()?;
    summary
        .lines()
        .find_map(|l| l.strip_prefix("calls to allocation functions: ")?.split_whitespace().next()?.parse().ok())
}

/// bcc's memleak on jq. memleak's own `-c` runs the command before it compiles its eBPF
/// program (a second or two), so jq would run untraced meanwhile; instead jq is forked and
/// held before exec (leaktrace's launcher), memleak is attached to its pid (`-p`; uprobes
/// scoped to a pid stay with it across exec) with one report an hour, so none while jq runs,
/// then jq is let through: the time is jq's, from exec to exit, without memleak's start-up.
/// memleak is interrupted after jq exits (it exits without a report).
pub fn memleak(env: &Env, input: &Input) -> Result<Run> {
    let mut command = Command::new("jq");
    command.args(jq_args(input)).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
    let held = launch::hold_command(command)?;
    let tracer = tools::start_memleak(env, held.pid, &["3600"])?;
    let t0 = Instant::now();
    let child = held.release()?;
    let out = child.wait_with_output()?;
    let wall_s = t0.elapsed().as_secs_f64();
    tracer.stop(libc::SIGINT, Duration::from_secs(60))?;
    if !out.status.success() {
        bail!("jq failed under memleak ({})", out.status);
    }
    Ok(Run { wall_s, stdout: String::from_utf8_lossy(&out.stdout).into_owned() })
}
