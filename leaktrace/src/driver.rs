//! What every trace does, whatever it traces: check the outputs and privileges, catch the
//! stop signals, run the loop (refresh, interval reports, library events, the deadline), then
//! print the final report, write the exports and detach. The modes (`user`, `kernel`) supply
//! the [`Mode`] behind it.

use std::time::{Duration, Instant};

use leaktrace_common::UnwindEvent;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    bpf::UnwindEvents,
    config::{Config, Export, TextOptions},
    console::Console,
    error::{Error, Result},
    interrupt,
    model::Report,
    privileges, render,
};

/// How often the target's mappings are re-read while it runs: often at first, when a
/// launched program is still loading its libraries, then at a slower pace.
const FAST_REFRESH: Duration = Duration::from_millis(20);
const FAST_REFRESH_FOR: Duration = Duration::from_secs(2);
const SLOW_REFRESH: Duration = Duration::from_millis(200);

/// One kind of trace, as the driver sees it.
pub(crate) trait Mode {
    /// Called on every refresh tick; false once the traced target is gone (or, with
    /// `--run`, once its runs are done).
    fn poll(&mut self) -> Result<bool>;
    /// Takes a report (`final_report`: every stack symbolized, for the files).
    fn report(&mut self, final_report: bool) -> Result<Report>;
    /// The event stream of library loads and unloads, if this mode has one.
    fn take_library_events(&mut self) -> Result<Option<UnwindEvents>> {
        Ok(None)
    }
    /// The dynamic linker changed the libraries of the processes named in `events` and
    /// stopped them: update what depends on their mappings and resume them.
    fn libraries_changed(&mut self, _events: &[UnwindEvent]) -> Result<()> {
        Ok(())
    }
    /// Tracing is over (for `stop`): end what the mode started, before the final report.
    fn wind_down(&mut self, stop: StopReason);
    /// After the final report: detach every probe and release the targets.
    fn detach(self);
    /// How the final report's heading says the target ended.
    fn exit_wording(&self) -> &'static str {
        "target exited"
    }
}

/// When and how often to report.
pub(crate) struct Schedule {
    /// Start of tracing.
    pub started: Instant,
    /// Between reports.
    pub interval: Option<Duration>,
    /// Number of interval reports.
    pub count: Option<u64>,
    /// Total tracing time.
    pub duration: Option<Duration>,
}

impl Schedule {
    /// The schedule `config` asks for, starting now.
    pub fn of(config: &Config) -> Self {
        Self { started: Instant::now(), interval: config.interval, count: config.count, duration: config.duration }
    }
}

/// Why tracing ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The target exited.
    TargetExited,
    /// --duration elapsed.
    Duration,
    /// COUNT interval reports were printed.
    Count,
    /// SIGINT.
    Interrupted,
    /// SIGTERM.
    Terminated,
    /// SIGHUP (the terminal or SSH session closed): as SIGTERM.
    HungUp,
    /// Standard output was closed (`| head`): the files are still written.
    StdoutClosed,
}

/// What a finished run produced.
pub struct Outcome {
    /// The final report.
    pub report: Report,
    /// Why tracing ended.
    pub stop: StopReason,
}

/// SIGINT, SIGTERM and SIGHUP, caught from before the first probe is attached: a signal
/// that arrives while leaktrace is still setting up ends the trace with a report, it does
/// not kill leaktrace with probes half attached.
pub(crate) struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

/// What every trace checks before loading anything: the output files can be written, the
/// process may load eBPF programs. Then the stop signals are caught.
pub(crate) fn preflight(exports: &[Export]) -> Result<StopSignals> {
    for export in exports {
        render::output::check_writable(&export.path)?;
    }
    if !privileges::can_trace() {
        return Err(Error::NotPrivileged);
    }
    Ok(StopSignals {
        interrupt: signal(SignalKind::interrupt()).map_err(|e| Error::io("installing a SIGINT handler", e))?,
        terminate: signal(SignalKind::terminate()).map_err(|e| Error::io("installing a SIGTERM handler", e))?,
        hangup: signal(SignalKind::hangup()).map_err(|e| Error::io("installing a SIGHUP handler", e))?,
    })
}

/// Runs `mode` to its end and produces the final report: the loop, the final text report on
/// stdout, every export, then the detach. From the end of the loop on, a stop signal ends
/// leaktrace at once (see `interrupt`).
pub(crate) async fn drive(mut mode: impl Mode, config: &Config, signals: &mut StopSignals) -> Result<Outcome> {
    let schedule = Schedule::of(config);
    let library_events = mode.take_library_events()?;
    let mut console = Console::start();
    let stop = trace_loop(&mut mode, &schedule, signals, library_events, config.text, &mut console).await?;
    let mut unwritten: Vec<String> = std::iter::once("the final report".to_string())
        .chain(config.exports.iter().map(|e| e.path.display().to_string()))
        .collect();
    interrupt::not_written(&unwritten);
    interrupt::exit_on_signal();
    mode.wind_down(stop);
    let report = mode.report(true)?;
    console.finish(final_text(&report, stop, mode.exit_wording(), config.text));
    if console.skipped > 0 {
        crate::say!("leaktrace: {} interval reports skipped: stdout was not being read", console.skipped);
    }
    let exported = export(&report, &config.exports, &mut unwritten);
    // Whatever happened to the files, the probes come off and the targets are released.
    mode.detach();
    // A closed stdout is the reader's choice (`| head`), not a failure.
    console.drain();
    exported?;
    Ok(Outcome { report, stop })
}

/// The next batch of library-change events, or never when there is no event source.
async fn next_library_change(events: &mut Option<UnwindEvents>) -> Result<Vec<UnwindEvent>> {
    match events {
        Some(events) => events.next_batch().await,
        None => std::future::pending().await,
    }
}

/// Runs until the target is gone, the time or count is up, or a signal arrives, printing a
/// report every interval.
async fn trace_loop(
    mode: &mut impl Mode,
    schedule: &Schedule,
    signals: &mut StopSignals,
    mut library_events: Option<UnwindEvents>,
    text: TextOptions,
    console: &mut Console,
) -> Result<StopReason> {
    let far = Duration::from_secs(365 * 24 * 3600);
    let deadline = tokio::time::sleep(schedule.duration.unwrap_or(far));
    tokio::pin!(deadline);
    let interval = schedule.interval.unwrap_or(far);
    let mut reports = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut printed = 0u64;
    loop {
        let refresh_every = if schedule.started.elapsed() < FAST_REFRESH_FOR { FAST_REFRESH } else { SLOW_REFRESH };
        tokio::select! {
            _ = signals.interrupt.recv() => return Ok(StopReason::Interrupted),
            _ = signals.terminate.recv() => return Ok(StopReason::Terminated),
            _ = signals.hangup.recv() => return Ok(StopReason::HungUp),
            () = &mut deadline => return Ok(StopReason::Duration),
            events = next_library_change(&mut library_events) => mode.libraries_changed(&events?)?,
            _ = reports.tick() => {
                console.offer(render::text::render_with(&mode.report(false)?, text, true));
                printed += 1;
                if schedule.count.is_some_and(|count| printed >= count) {
                    return Ok(StopReason::Count);
                }
            }
            () = tokio::time::sleep(refresh_every) => {
                if !mode.poll()? {
                    return Ok(StopReason::TargetExited);
                }
                if console.is_closed() {
                    return Ok(StopReason::StdoutClosed);
                }
            }
        }
    }
}

/// The final report under a heading that says why tracing ended.
fn final_text(report: &Report, stop: StopReason, exited_wording: &str, text: TextOptions) -> String {
    let why = match stop {
        StopReason::TargetExited => exited_wording,
        StopReason::Duration => "duration reached",
        StopReason::Count => "report count reached",
        StopReason::Interrupted => "interrupted",
        StopReason::Terminated => "terminated",
        StopReason::HungUp => "hung up",
        StopReason::StdoutClosed => "stdout closed",
    };
    let heading =
        format!("\nFinal report: {}, traced {:.1} s, {why}:\n", render::names::subject(report), report.duration_s);
    heading + &render::text::render_with(report, text, false)
}

/// Writes the final report to every requested file, each one whatever happened to the
/// others, and takes each file written off `unwritten`. Every failure but the first is
/// said here; the first is returned.
fn export(report: &Report, exports: &[Export], unwritten: &mut Vec<String>) -> Result<()> {
    let mut first_error = None;
    for export in exports {
        let renderer = render::renderer(export.format);
        let written = (renderer.render)(report).and_then(|bytes| render::output::write_atomic(&export.path, &bytes));
        match written {
            Ok(()) => {
                crate::say!("Wrote {} report to {}", renderer.name, export.path.display());
                let path = export.path.display().to_string();
                unwritten.retain(|p| *p != path);
                interrupt::not_written(unwritten);
            }
            Err(e) if first_error.is_none() => first_error = Some(e),
            Err(e) => crate::say!("leaktrace: error: {e}"),
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// When a run started, by the clocks its reports use.
pub(crate) struct RunClock {
    started: Instant,
    started_at: String,
    kernel_release: String,
}

impl RunClock {
    /// Starts the clock now.
    pub fn start() -> Self {
        Self {
            started: Instant::now(),
            started_at: now_rfc3339(),
            kernel_release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
        }
    }

    /// Seconds since the start.
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The time fields of a report taken now.
    pub fn stamp(&self) -> crate::model::Stamp {
        crate::model::Stamp {
            started_at: self.started_at.clone(),
            generated_at: now_rfc3339(),
            duration_s: (self.elapsed_s() * 1000.0).round() / 1000.0,
            kernel_release: self.kernel_release.clone(),
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of `bpf_ktime_get_ns`.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec; CLOCK_MONOTONIC is what bpf_ktime_get_ns reads.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Local time as RFC 3339 with milliseconds.
fn now_rfc3339() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

/// Which counter slot feeds which `u64` field of a `T`.
pub(crate) type CounterFields<T> = [(leaktrace_common::Counter, fn(&mut T) -> &mut u64)];

/// Reads the counters `table` names into a value of `T` (a report's losses or activity):
/// the one place a counter slot becomes a report field.
pub(crate) fn from_counters<T: Default>(counters: &[u64], table: &CounterFields<T>) -> T {
    let mut value = T::default();
    for (counter, field) in table {
        *field(&mut value) = counters[*counter as usize];
    }
    value
}
