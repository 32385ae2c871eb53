#![no_std]
// This file exists so that the crate has a library target; the programs are in main.rs.
