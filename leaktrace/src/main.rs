//! The `leaktrace` command: parse, run, and turn the outcome into an exit code.

use std::process::ExitCode;

use clap::Parser as _;
use leaktrace::{app::Verdict, cli::Cli, Error};

/// Exit status when `diff --fail-if-growth` finds a stack that grew too much.
const EXIT_GROWTH: u8 = 3;
/// Exit status for a bad command line (as clap's own).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).format_timestamp(None).init();
    // The guardian a trace starts (leaktrace::guardian) is told apart before the command line
    // is parsed, so that it appears in no help, man page or shell completion.
    if std::env::args_os().nth(1).is_some_and(|arg| arg == leaktrace::guardian::SUBCOMMAND) {
        return exit_code(leaktrace::guardian::run().map(|()| Verdict::Done));
    }
    exit_code(Cli::parse().into_action().and_then(leaktrace::app::run))
}

/// The one place an outcome becomes an exit status (and its last line on stderr).
fn exit_code(outcome: Result<Verdict, Error>) -> ExitCode {
    match outcome {
        Ok(Verdict::Done) => ExitCode::SUCCESS,
        Ok(Verdict::Grown(growth)) => {
            leaktrace::say!("leaktrace: {growth}");
            ExitCode::from(EXIT_GROWTH)
        }
        Err(e) => {
            leaktrace::say!("leaktrace: error: {}", one_line(&e.to_string()));
            match e {
                Error::Usage(_) => ExitCode::from(EXIT_USAGE),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// An error on one line, whatever it quotes (a malformed file's error may quote a string value
/// from it, newlines and all): control characters are escaped.
fn one_line(message: &str) -> String {
    let mut line = String::with_capacity(message.len());
    for c in message.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}
