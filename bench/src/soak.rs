//! The soak: `leaktrace-bench --soak MINUTES` traces the workload's steady traffic (10,000
//! allocation calls per second on average) for that long with an interval report every 10 s,
//! and checks that leaktrace stays flat (resident memory, tracked allocations) and exact (every
//! interval's figures against the workload's state at that moment, nothing lost).
//!
//! The workload (`soak` mode) pauses for one second around each 10 s mark of its run and
//! prints its exact state then; leaktrace is attached to it before it starts, so its interval
//! samples fall in those pauses. Each sample's per-stack figures come from the final JSON
//! report (`stacks[].trend.series`), whose samples are the interval samples in order; the
//! tracked allocations are the interval reports' `Outstanding:` lines.

use std::{collections::BTreeMap, fmt::Write as _, path::Path, time::Duration};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::{
    proc::{self, Waiting},
    stats::{median, round},
    step,
    tools::{self, Env},
    workload,
};

/// Average allocation calls per second.
const RATE: u64 = 10_000;
/// Seconds between reports.
const PERIOD_S: u64 = 10;
/// Call paths the workload keeps state for, as named in the stacks' frames.
const SITES: [&str; 6] = ["op_small", "op_calloc", "op_medium", "op_resize", "op_table", "soak_leak"];

/// One site's state: outstanding bytes, outstanding count, cumulative allocated bytes.
type SiteState = [u64; 3];
/// Per site, at one moment.
type State = BTreeMap<String, SiteState>;

/// What the harness saw at one pause of the workload.
struct Pause {
    /// Seconds since the workload began.
    at_s: f64,
    truth: State,
    rss_kib: u64,
    cpu_ticks: u64,
}

/// Runs the soak for `minutes` and writes soak.json and soak.md into `out`.
pub fn run(env: &Env, minutes: f64, out: &Path) -> Result<()> {
    let seconds = minutes * 60.0 + PERIOD_S as f64 / 2.0;
    step(&format!("soak: {RATE} allocation calls/s for {minutes} min, a report every {PERIOD_S} s"));
    let json_path = env.scratch.join("soak.json");
    let _ = std::fs::remove_file(&json_path);
    let a = tools::args(&["--wait", "soak", &RATE.to_string(), &seconds.to_string(), &PERIOD_S.to_string()]);
    let mut w = Waiting::spawn(std::process::Command::new(&env.workload).args(&a), Duration::from_secs(60))?;
    let extra = tools::args(&["--json", &json_path.display().to_string(), &PERIOD_S.to_string()]);
    let tracer = tools::start_leaktrace(env, w.pid, &extra)?;
    let tracer_pid = tracer.child.id();
    let go = w.go()?;
    let (pauses, final_truth) = follow_pauses(&mut w, tracer_pid, go, seconds)?;
    // The final report is taken with the workload still alive and idle, once its last blocks
    // are older than leaktrace's default age filter (500 ms), so that every call path is shown.
    std::thread::sleep(Duration::from_secs(1));
    let (code, usage, stdout, stderr) = tracer.stop(libc::SIGINT, Duration::from_secs(120))?;
    w.finish(Duration::from_secs(30))?;
    if code != 0 {
        bail!("leaktrace exited with {code}: {stderr:?}");
    }
    let report = workload::read_json(&json_path)?;
    let result = judge(&pauses, &final_truth, &report, &stdout, usage)?;
    std::fs::write(out.join("soak.json"), serde_json::to_string_pretty(&result)? + "\n")?;
    let table = markdown(&result);
    std::fs::write(out.join("soak.md"), &table)?;
    println!("{table}");
    eprintln!("bench: wrote {} and soak.md", out.join("soak.json").display());
    Ok(())
}

/// Reads the workload's pauses as they come, taking leaktrace's RSS and CPU at each, until
/// it is done; returns them with the final state (after its last blocks in flight are freed).
fn follow_pauses(w: &mut Waiting, tracer: u32, go: std::time::Instant, seconds: f64) -> Result<(Vec<Pause>, State)> {
    let mut pauses = Vec::new();
    let mut current: Option<(i64, f64, State)> = None;
    let timeout = Duration::from_secs(3 * PERIOD_S);
    loop {
        let Some((at, line)) = w.out.wait_for(timeout, |_| true) else {
            bail!(
                "the soak workload went silent; last lines: {:?}",
                w.out.seen.iter().rev().take(5).collect::<Vec<_>>()
            );
        };
        let mut f = line.split_whitespace();
        match f.next() {
            Some("PAUSE") => {
                let k: i64 = f.next().context("PAUSE without a number")?.parse()?;
                current = Some((k, at.duration_since(go).as_secs_f64(), State::new()));
                if k == 0 {
                    continue;
                }
                let rss_kib = proc::status_kb(tracer, "VmRSS").context("reading leaktrace's VmRSS")?;
                let cpu_ticks = proc::cpu_ticks(tracer).context("reading leaktrace's CPU time")?;
                let (_, at_s, _) = current.as_ref().expect("just set");
                pauses.push(Pause { at_s: *at_s, truth: State::new(), rss_kib, cpu_ticks });
                if pauses.len() % 30 == 0 {
                    step(&format!("soak: {:.0} of {seconds:.0} s", at_s));
                }
            }
            Some("SITE") => {
                let (k, _, state) = current.as_mut().context("SITE before PAUSE")?;
                let fields: Vec<&str> = f.collect();
                let [_, name, bytes, count, allocated] = fields[..] else { bail!("bad SITE line {line:?}") };
                state.insert(name.to_string(), [bytes.parse()?, count.parse()?, allocated.parse()?]);
                if *k > 0 && state.len() == SITES.len() {
                    pauses.last_mut().expect("pushed at PAUSE").truth = state.clone();
                }
            }
            Some("done") => break,
            _ => {}
        }
    }
    let Some((0, _, final_truth)) = current else { bail!("the soak workload printed no final state") };
    Ok((pauses, final_truth))
}

/// Per site, leaktrace's figures at each interval sample (in order) and at the final one.
fn reported_states(report: &Value) -> Result<Vec<State>> {
    let stacks = report["stacks"].as_array().context("report without stacks")?;
    let mut times: Vec<f64> = stacks
        .iter()
        .flat_map(|s| s["trend"]["series"].as_array().into_iter().flatten())
        .filter_map(|p| p["t_s"].as_f64())
        .filter(|t| *t > 0.0)
        .collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    let mut states = vec![State::new(); times.len()];
    for stack in stacks {
        let Some(site) = site_of(stack) else { continue };
        for point in stack["trend"]["series"].as_array().into_iter().flatten() {
            let Some(i) = point["t_s"].as_f64().and_then(|t| times.iter().position(|x| *x == t)) else { continue };
            let entry = states[i].entry(site.to_string()).or_default();
            for (slot, key) in ["bytes", "count", "allocated_bytes"].into_iter().enumerate() {
                entry[slot] += point[key].as_u64().unwrap_or(0);
            }
        }
    }
    Ok(states)
}

/// The workload site a stack belongs to: the first of its frames that names one.
fn site_of(stack: &Value) -> Option<&'static str> {
    stack["frames"].as_array()?.iter().find_map(|f| SITES.iter().copied().find(|s| f["symbol"].as_str() == Some(*s)))
}

/// The differences between a state leaktrace reported and the truth, one string per site.
fn differences(reported: Option<&State>, truth: &State) -> Vec<String> {
    let empty = State::new();
    let reported = reported.unwrap_or(&empty);
    truth
        .iter()
        .filter_map(|(site, want)| {
            let got = reported.get(site).copied().unwrap_or_default();
            (got != *want).then(|| format!("{site}: reported {got:?}, truth {want:?} (bytes, count, allocated bytes)"))
        })
        .collect()
}

/// The `Outstanding: B bytes in N allocations` lines of leaktrace's reports, in order.
fn outstanding_lines(stdout: &[String]) -> Vec<(u64, u64)> {
    stdout
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("Outstanding: ")?;
            let mut f = rest.split_whitespace();
            let bytes = f.next()?.parse().ok()?;
            let count = f.nth(2)?.parse().ok()?;
            Some((bytes, count))
        })
        .collect()
}

/// Compares every interval with the truth and sums up flatness and losses.
fn judge(
    pauses: &[Pause],
    final_truth: &State,
    report: &Value,
    stdout: &[String],
    usage: proc::Usage,
) -> Result<Value> {
    let states = reported_states(report)?;
    let outstanding = outstanding_lines(stdout);
    if states.len() <= pauses.len() {
        bail!("the report has {} samples for {} pauses and the final report", states.len(), pauses.len());
    }
    let hz = proc::ticks_per_second();
    let mut rows = Vec::new();
    let mut inexact = Vec::new();
    for (k, pause) in pauses.iter().enumerate() {
        let diff = differences(states.get(k), &pause.truth);
        let truth_total = pause.truth.values().fold((0, 0), |(b, c), s| (b + s[0], c + s[1]));
        let tracked = outstanding.get(k).copied();
        let totals_exact = tracked == Some(truth_total);
        if !diff.is_empty() || !totals_exact {
            inexact.push(json!({"report": k + 1, "sites": diff, "outstanding": tracked, "truth": truth_total}));
        }
        let cpu_pct = match k.checked_sub(1).map(|j| &pauses[j]) {
            Some(prev) => 100.0 * (pause.cpu_ticks - prev.cpu_ticks) as f64 / hz / (pause.at_s - prev.at_s),
            None => 100.0 * pause.cpu_ticks as f64 / hz / pause.at_s,
        };
        rows.push(json!({
            "t_s": round(pause.at_s, 1),
            "leaktrace_rss_mib": round(pause.rss_kib as f64 / 1024.0, 2),
            "leaktrace_cpu_pct": round(cpu_pct, 2),
            "tracked_allocations": tracked.map(|t| t.1),
            "truth_allocations": truth_total.1,
            "exact": diff.is_empty() && totals_exact,
        }));
    }
    // Samples taken after the workload's end (the final report's, and an interval's that fell
    // before leaktrace was stopped) see its final state.
    let final_diff: Vec<String> =
        states[pauses.len()..].iter().flat_map(|s| differences(Some(s), final_truth)).collect();
    let rss: Vec<f64> = pauses.iter().map(|p| p.rss_kib as f64 / 1024.0).collect();
    let lost = &report["lost"];
    let lost_total: u64 = lost.as_object().map_or(0, |o| o.values().filter_map(Value::as_u64).sum());
    let leak_stack = report["stacks"].as_array().into_iter().flatten().find(|s| site_of(s) == Some("soak_leak"));
    // After the first minute (tables built, caches warm): how much RSS moved.
    let settled = rss.get(6..).unwrap_or(&[]);
    Ok(json!({
        "command": format!("leaktrace -p PID --json FILE {PERIOD_S} on workload --wait soak {RATE} SECONDS {PERIOD_S}"),
        "rate_allocs_per_s": RATE,
        "period_s": PERIOD_S,
        "reports": pauses.len(),
        "reports_exact": pauses.len() - inexact.len(),
        "final_exact": final_diff.is_empty(),
        "final_mismatches": final_diff,
        "inexact_reports": inexact,
        "samples_in_report": states.len(),
        "lost": lost,
        "lost_total": lost_total,
        "free_unknown": report["activity"]["free_unknown"],
        "alloc_calls": report["activity"]["alloc_calls"],
        "leak_class": leak_stack.map(|s| s["trend"]["class"].clone()),
        "leak_bytes_per_min": leak_stack.map(|s| s["trend"]["bytes_per_min"].clone()),
        "leak_truth_bytes_per_min": 16 * 1024 * 60 / PERIOD_S,
        "rss_mib": {
            "first": rss.first().map(|r| round(*r, 2)),
            "last": rss.last().map(|r| round(*r, 2)),
            "min_after_1_min": settled.iter().copied().reduce(f64::min).map(|r| round(r, 2)),
            "max_after_1_min": settled.iter().copied().reduce(f64::max).map(|r| round(r, 2)),
            "median": round(median(&rss), 2),
        },
        "leaktrace_cpu_s": round(usage.cpu_s, 1),
        "leaktrace_peak_rss_mib": round(usage.max_rss_mib, 1),
        "series": rows,
    }))
}

/// soak.md: the summary and one row a minute.
fn markdown(r: &Value) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Soak: {} reports at {} allocation calls/s, a report every {} s: {} exact, final report exact: {}; lost events: {}; soak_leak classed {} at {} B/min (truth {} B/min)\n",
        r["reports"],
        r["rate_allocs_per_s"],
        r["period_s"],
        r["reports_exact"],
        r["final_exact"],
        r["lost_total"],
        r["leak_class"],
        r["leak_bytes_per_min"],
        r["leak_truth_bytes_per_min"]
    );
    let rss = &r["rss_mib"];
    let _ = writeln!(
        s,
        "leaktrace RSS (MiB): first {}, after the first minute between {} and {}, last {}; peak {}; CPU {} s\n",
        rss["first"],
        rss["min_after_1_min"],
        rss["max_after_1_min"],
        rss["last"],
        r["leaktrace_peak_rss_mib"],
        r["leaktrace_cpu_s"]
    );
    s.push_str("| t (s) | leaktrace RSS (MiB) | leaktrace CPU (%) | tracked allocations | truth | exact |\n|---|---|---|---|---|---|\n");
    let rows = r["series"].as_array().cloned().unwrap_or_default();
    let every = (60 / PERIOD_S) as usize;
    for (i, row) in rows.iter().enumerate() {
        if i % every == every - 1 || i + 1 == rows.len() {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                row["t_s"],
                row["leaktrace_rss_mib"],
                row["leaktrace_cpu_pct"],
                row["tracked_allocations"],
                row["truth_allocations"],
                row["exact"]
            );
        }
    }
    s
}
