//! What an invocation does: trace (user or kernel mode), render a saved report, or compare
//! two; and how it ended.

use std::io::Write as _;

use crate::{
    config::{Action, Format, Target},
    error::{Error, Result},
    kernel,
    render::{self, diff},
    user,
};

/// How an invocation that did its work ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to report beyond the output.
    Done,
    /// `diff --fail-if-growth`: stacks grew by more than the threshold.
    Grown(diff::Growth),
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(|e| Error::io("writing to stdout", e)),
    }
}

/// Carries out `action`.
pub fn run(action: Action) -> Result<Verdict> {
    match action {
        Action::Trace(config) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io("starting the async runtime", e))?;
            let config = *config;
            let outcome = match &config.target {
                Target::Kernel(options) => {
                    let options = options.clone();
                    runtime.block_on(kernel::run(config, options))
                }
                Target::Pid(_) | Target::Launch { .. } => runtime.block_on(user::run(config)),
            };
            outcome.map(|_| Verdict::Done)
        }
        Action::Render { report: path, format, output, text } => {
            let report = render::json::load(&path)?;
            let bytes = match format {
                Format::Text => render::text::render_with(&report, text, false).into_bytes(),
                _ => render::render(&report, format)?,
            };
            match output {
                Some(output) => render::output::write_atomic(&output, &bytes)?,
                None => write_stdout(&bytes)?,
            }
            Ok(Verdict::Done)
        }
        Action::Diff { before, after, json, svg, fail_if_growth, top } => {
            for path in json.iter().chain(&svg) {
                render::output::check_writable(path)?;
            }
            let (before, after) = (render::json::load(&before)?, render::json::load(&after)?);
            let comparison = diff::compare(&before, &after);
            write_stdout(diff::render_text(&comparison, top).as_bytes())?;
            if let Some(path) = &json {
                render::output::write_atomic(path, diff::to_json(&comparison).as_bytes())?;
            }
            if let Some(path) = &svg {
                render::output::write_atomic(path, &diff::render_svg(&before, &after)?)?;
            }
            let growth = fail_if_growth.and_then(|threshold| diff::growth_above(&comparison, threshold));
            Ok(growth.map_or(Verdict::Done, Verdict::Grown))
        }
    }
}
