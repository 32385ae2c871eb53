#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
// This file exists so that the crate has a library target; the programs are in main.rs.
