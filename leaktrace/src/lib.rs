//! leaktrace: find memory leaks in running Linux processes with eBPF.
//!
//! The flow of a run, module by module:
//! [`cli`] turns arguments into a [`config::Config`]; [`session`] resolves the
//! [`target`] and its [`allocator`], loads and attaches the programs through [`bpf`] (the
//! only module that calls aya), then periodically reads the outstanding allocations,
//! groups them with [`aggregate`], names their frames with [`symbolize`] and renders a
//! [`report`] as text, JSON, folded stacks, a flame graph or a pprof profile. [`app`]
//! dispatches between tracing and working on saved reports (`report`, `diff`).
#![deny(missing_docs)]

pub mod aggregate;
pub mod app;
pub mod allocator;
pub mod bpf;
pub mod cli;
pub mod config;
pub mod error;
pub mod kernel;
pub mod privileges;
pub mod probe_site;
pub mod report;
pub mod sampling;
pub mod session;
pub mod symbolize;
pub mod target;
pub mod trend;
pub mod unwind;

pub use error::{Error, Result};
