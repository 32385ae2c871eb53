//! leaktrace: find memory leaks in running Linux processes with eBPF.
//!
//! The flow of a run, module by module (docs/architecture.md draws it):
//! [`cli`] turns arguments into a [`config::Config`]; [`app`] sends it to a mode, [`user`]
//! (a process's allocator, through uprobes) or [`kernel`] (the slab, page and percpu
//! allocators, through tracepoints), and both run on the [`driver`] (the loop, signals,
//! final report and exports). A mode finds its targets ([`process`], [`allocator`],
//! [`probe_site`], [`symbols`]), loads and attaches the programs through [`bpf`] (the only module that
//! calls aya), keeps [`mappings`] and [`unwind`] tables current, and at each report reads
//! the maps, groups with [`aggregate`], follows growth with [`trend`] (and [`sampling`]
//! estimates), names frames with [`symbolize`] (marking the first of the program's own, [`focus`]) and builds one [`model::Report`], which the
//! [`render`]ers turn into text, JSON, folded stacks, a flame graph or a pprof profile.
#![deny(missing_docs)]

/// A line on stderr that never panics. `eprintln!` panics when stderr is a pipe whose reader
/// left (`2>&1 | head`, a closed SSH session): that would end a trace without its final
/// report, exports or detach. A message nobody can read is dropped instead.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod aggregate;
pub mod allocator;
pub mod app;
pub mod bpf;
pub mod cli;
pub mod config;
pub mod console;
pub mod driver;
pub mod error;
pub mod features;
pub mod focus;
pub mod guardian;
pub mod interrupt;
pub mod kernel;
pub mod mappings;
pub mod model;
pub mod php;
pub mod privileges;
pub mod probe_site;
pub mod process;
pub mod render;
pub mod sampling;
pub mod symbolize;
pub mod symbols;
pub mod trend;
pub mod unwind;
pub mod user;

pub use error::{Error, Result};
