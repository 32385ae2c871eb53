//! `leaktrace-packaging OUT_DIR`: writes leaktrace's man pages and shell completions, generated
//! from the same clap definition the binary parses with, so they cannot drift from its options.
//!
//! - `OUT_DIR/man/leaktrace.1`, and one page per subcommand (`leaktrace-report.1`, …);
//! - `OUT_DIR/completions/leaktrace.bash`, `_leaktrace` (zsh) and `leaktrace.fish`.
//!
//! `cargo xtask package` runs it and installs the files where Debian's shells and man look.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{Command, CommandFactory as _};
use clap_complete::Shell;
use clap_mangen::{
    roff::{roman, Roff},
    Man,
};
use leaktrace::cli::Cli;

/// The shells whose completions the package installs, and the file name each one loads.
const SHELLS: [(Shell, &str); 3] =
    [(Shell::Bash, "leaktrace.bash"), (Shell::Zsh, "_leaktrace"), (Shell::Fish, "leaktrace.fish")];

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out_dir), None) = (args.next(), args.next()) else {
        bail!("usage: leaktrace-packaging OUT_DIR");
    };
    let out_dir = PathBuf::from(out_dir);
    write_man_pages(&out_dir.join("man"))?;
    write_completions(&out_dir.join("completions"))
}

/// `leaktrace.1`, and `leaktrace-<subcommand>.1` for each subcommand, which the main page lists.
fn write_man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // No `help` subcommand: it has no page of its own to point to.
    let mut cli = Cli::command().disable_help_subcommand(true);
    cli.build();
    // Every page's footer names the release and commit, subcommand pages too (they have no version of their own).
    let source = format!("leaktrace {}", cli.get_version().unwrap_or_default());
    let mut pages = vec![cli.clone()];
    pages.extend(cli.get_subcommands().cloned());
    for command in pages {
        let man = Man::new(command.clone()).source(source.as_str());
        let path = dir.join(man.get_filename());
        std::fs::write(&path, render_page(&man, &command)?).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// clap_mangen's sections, except that the examples (clap's after-help text) are set as written, one per line,
/// where clap_mangen's EXTRA section would fill them into a paragraph.
fn render_page(man: &Man, command: &Command) -> std::io::Result<Vec<u8>> {
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    if command.has_subcommands() {
        man.render_subcommands_section(&mut page)?;
    }
    if let Some(after_help) = command.get_after_help() {
        examples_section(&after_help.to_string()).to_writer(&mut page)?;
    }
    if command.get_version().is_some() {
        man.render_version_section(&mut page)?;
    }
    Ok(page)
}

/// An EXAMPLES section in no-fill mode, from help text whose first line is its heading ("Examples:").
fn examples_section(after_help: &str) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["EXAMPLES"]).control("nf", []);
    for line in after_help.lines().skip_while(|line| line.trim_end().ends_with(':')) {
        roff.text([roman(line.strip_prefix("  ").unwrap_or(line))]);
    }
    roff.control("fi", []);
    roff
}

fn write_completions(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (shell, file_name) in SHELLS {
        // Into memory first: the generators panic on a failed write, a file gives an error with its path.
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "leaktrace", &mut script);
        let path = dir.join(file_name);
        std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
