//! What an invocation does: trace, render a saved report, or compare two.

use std::io::Write as _;

use crate::{
    config::Action,
    error::{Error, Result},
    report::{self, diff},
    session,
};

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(|e| Error::io("writing to stdout", e)),
    }
}

/// Carries out `action`.
pub fn run(action: Action) -> Result<()> {
    match action {
        Action::Trace(config) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io("starting the async runtime", e))?;
            runtime.block_on(session::run(*config)).map(|_| ())
        }
        Action::Render { report: path, format, output } => {
            let report = report::json::load(&path)?;
            let bytes = report::render(&report, format)?;
            match output {
                Some(output) => report::output::write_atomic(&output, &bytes),
                None => write_stdout(&bytes),
            }
        }
        Action::Diff { before, after, json, fail_if_growth, top } => {
            if let Some(path) = &json {
                report::output::check_writable(path)?;
            }
            let comparison = diff::compare(&report::json::load(&before)?, &report::json::load(&after)?);
            write_stdout(diff::render_text(&comparison, top).as_bytes())?;
            if let Some(path) = &json {
                let mut text = serde_json::to_string_pretty(&comparison).expect("the diff model always serializes");
                text.push('\n');
                report::output::write_atomic(path, text.as_bytes())?;
            }
            if let Some(threshold) = fail_if_growth {
                let grown: Vec<i64> =
                    comparison.stacks.iter().map(|d| d.bytes_delta).filter(|&d| d > threshold as i64).collect();
                if let Some(&largest) = grown.iter().max() {
                    return Err(Error::GrowthAboveThreshold { threshold, stacks: grown.len(), largest });
                }
            }
            Ok(())
        }
    }
}
