#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
// This file exists so that the crate has a library target; the programs are in main.rs (the
// production object) and floor_main.rs (the benchmark's floor object).
