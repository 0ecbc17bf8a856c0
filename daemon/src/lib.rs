//! Fuzzing hooks into the daemon's parsers, for the targets in `fuzz/`.
//!
//! The daemon is the `qkeyd` binary and nothing depends on this crate: this
//! library is empty unless built with `--cfg fuzzing` (as cargo-fuzz builds
//! it). Then it compiles the binary's module tree once more, so that its
//! `fuzz` module can drive the parsers and handlers that outside input
//! reaches, as they run in the daemon.
#![cfg(fuzzing)]
#![forbid(unsafe_code)]
// The binary's items that only `main.rs` calls are unused in this build.
#![allow(dead_code, unreachable_pub)]

mod api;
mod assess;
mod attest;
mod attest_cli;
mod certificate;
mod check;
mod cli;
mod config;
mod durable;
mod incident;
mod keys_cli;
mod kms;
mod metrics;
mod module_server;
mod notify;
mod objects;
mod pool;
mod qkd;
mod refusals;
mod serve;
mod sources;
// The unit tests' world, which unwraps as tests do.
#[allow(clippy::unwrap_used)]
mod testing;
mod tls;
mod unix_socket;
mod vault;
mod verify_cli;

#[doc(hidden)]
pub mod fuzz;
