//! The cost figures of probe placement and sampling: the floor of one empty program per
//! probe site (at the function's entry and where leaktrace puts it), `--sample-bytes`'s
//! estimates against the truth over many runs, and leaktrace's start-up time.

use std::{collections::BTreeMap, process::Command, time::Instant};

use anyhow::Result;
use leaktrace::{probe_site, process};
use serde_json::{json, Value};

use crate::{
    proc, stats,
    stats::{median, round},
    step,
    tools::{self, args, Env, SAMPLED},
    workload, Plan,
};

/// The functions the one-shot workload calls.
const WORKLOAD_FUNCTIONS: [&str; 4] = ["malloc", "calloc", "realloc", "free"];

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One empty entry program per run, at each function's first instruction and at the site
/// leaktrace chose, interleaved with untraced runs; the hits per operation of each site come
/// from one run with bpf_stats on, so the table gives nanoseconds per probe hit.
pub fn floor_per_site(env: &Env, plan: &Plan) -> Result<Value> {
    let a = args(&["oneshot", &plan.oneshot_ops.to_string()]);
    let allocator = process::find_allocator_for_program(&env.workload, None, "")?;
    let library = std::fs::read(&allocator.path)?;
    // (row key, function, offset from its start, file offset)
    let mut sites: Vec<(String, String, u64, u64)> = Vec::new();
    for f in allocator
        .functions
        .iter()
        .filter(|f| f.object == allocator.path && WORKLOAD_FUNCTIONS.contains(&f.function.name))
    {
        sites.push((format!("{}+0", f.symbol), f.symbol.clone(), 0, f.file_offset));
        if f.site.offset != 0 {
            sites.push((format!("{}+{}", f.symbol, f.site.offset), f.symbol.clone(), f.site.offset, f.probe_offset()));
        }
    }
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for rep in 0..plan.reps {
        step(&format!("floor per probe site, repetition {} of {}", rep + 1, plan.reps));
        samples.entry("untraced".into()).or_default().push(tools::untraced(env, &a)?.ns_per_op());
        for (key, _, _, offset) in &sites {
            samples.entry(key.clone()).or_default().push(tools::floor_at(env, &a, *offset)?.0.ns_per_op());
        }
    }
    let base = median(&samples["untraced"]);
    let mut rows = Vec::new();
    {
        let _enabled = stats::BpfStats::set(true)?;
        for (key, function, offset, file_offset) in &sites {
            let (_, hits) = tools::floor_at(env, &a, *file_offset)?;
            let added = median(&samples[key]) - base;
            let bytes = &library[*file_offset as usize..];
            rows.push(json!({
                "site": key,
                "function": function,
                "offset": offset,
                "chosen": allocator.functions.iter().any(|f| &f.symbol == function && f.site.offset == *offset),
                "handling": probe_site::kernel_handling(bytes),
                "hits_per_op": round(hits, 3),
                "added_ns_per_op": round(added, 1),
                "ns_per_hit": round(added / hits, 1),
            }));
        }
    }
    Ok(
        json!({ "ops": plan.oneshot_ops, "repetitions": plan.reps, "untraced_ns_per_op": round(base, 1), "sites": rows }),
    )
}

/// `--sample-bytes 512K` over many runs of `workload sampled N`: per leak site how often the
/// estimate fell within ±10 % of the truth, beside the relative standard error the sampling
/// scheme implies for that site; and whether any stack of the churn paths held memory.
pub fn sampled_accuracy(env: &Env, plan: &Plan) -> Result<Value> {
    let a = args(&["sampled", &plan.oneshot_ops.to_string()]);
    let period = leaktrace::sampling::DEFAULT_PERIOD as f64;
    let mut estimates: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut truth = BTreeMap::new();
    let mut churn_holding = 0u64;
    let mut sampled_blocks = Vec::new();
    for run in 0..plan.sampled_runs {
        step(&format!("sampled estimates, run {} of {}", run + 1, plan.sampled_runs));
        let (out, report) = tools::leaktrace_report(env, &a, SAMPLED)?;
        for (site, &(bytes, _)) in &out.truth {
            let (estimate, _) = workload::leaktrace_totals(&report, site);
            estimates.entry(site.clone()).or_default().push(estimate as f64);
            truth.insert(site.clone(), bytes);
        }
        for stack in report["stacks"].as_array().into_iter().flatten() {
            let churn = stack["frames"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| f["symbol"].as_str().is_some_and(|s| s.starts_with("op_")));
            if churn && stack["bytes"].as_u64().unwrap_or(0) > 0 {
                churn_holding += 1;
            }
        }
        sampled_blocks.push(report["activity"]["alloc_calls"].as_f64().unwrap_or(0.0));
    }
    let mut sites = Vec::new();
    for (site, &(bytes, count)) in
        &workload::parse(&workload::lines(&proc::output(Command::new(&env.workload).args(&a))?))?.truth
    {
        let size = bytes as f64 / count as f64;
        let p = 1.0 - (-size / period).exp();
        let relative_sd = (count as f64 * size * size * (1.0 - p) / p).sqrt() / bytes as f64;
        let e = &estimates[site];
        let within = e.iter().filter(|x| ((*x - truth[site] as f64) / truth[site] as f64).abs() <= 0.10).count();
        sites.push(json!({
            "site": site,
            "bytes": bytes,
            "block_size": size,
            "expected_relative_sd": round(relative_sd, 4),
            "runs_within_10pct": within,
            "runs": e.len(),
            "median_estimate": round(median(e), 0),
            "estimates": e.iter().map(|x| round(*x, 0)).collect::<Vec<_>>(),
        }));
    }
    Ok(json!({
        "command": format!("{} {} --json FILE -- {} {}", env.leaktrace.display(), SAMPLED.join(" "), env.workload.display(), a.join(" ")),
        "period_bytes": period,
        "runs": plan.sampled_runs,
        "median_sampled_blocks": round(median(&sampled_blocks), 0),
        "churn_stacks_holding_memory": churn_holding,
        "sites": sites,
    }))
}

/// Launch: from starting `leaktrace -- workload` to the workload's `main` (its first
/// allocations follow at once); attach: from starting `leaktrace -p` to its "Tracing" line,
/// printed once every probe is attached.
pub fn startup(env: &Env, plan: &Plan) -> Result<Value> {
    let (mut launch, mut launch_sampled, mut attach) = (Vec::new(), Vec::new(), Vec::new());
    let a = args(&["oneshot", "1000"]);
    for rep in 0..plan.reps {
        step(&format!("start-up time, repetition {} of {}", rep + 1, plan.reps));
        for (options, into) in [(&[][..], &mut launch), (SAMPLED, &mut launch_sampled)] {
            let t0 = monotonic_ns();
            let (out, _) = tools::leaktrace_report(env, &a, options)?;
            if let Some(main) = out.main_ns {
                into.push(main.saturating_sub(t0) as f64 / 1e9);
            }
        }
        let mut wait = vec!["--wait".to_string()];
        wait.extend(a.iter().cloned());
        let mut w = proc::Waiting::spawn(Command::new(&env.workload).args(&wait), tools::RUN_TIMEOUT)?;
        let t0 = Instant::now();
        let tracer = tools::start_leaktrace(env, w.pid, &args(&["3600"]))?;
        attach.push(t0.elapsed().as_secs_f64());
        w.go()?;
        w.wait_done(tools::RUN_TIMEOUT)?;
        w.finish(tools::RUN_TIMEOUT)?;
        tracer.wait(tools::RUN_TIMEOUT)?;
    }
    Ok(json!({
        "launch_to_main_s": round(median(&launch), 3),
        "launch_sampled_to_main_s": round(median(&launch_sampled), 3),
        "attach_until_probes_live_s": round(median(&attach), 3),
        "samples": { "launch": launch, "launch_sampled": launch_sampled, "attach": attach },
    }))
}
