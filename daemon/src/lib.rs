//! qkeyd: a node daemon that turns hardware randomness into trustworthy keys.
//!
//! This crate is the `qkeyd` binary and the library behind it: configuration,
//! the entropy pool (conditioning and the SP 800-90A DRBG), the source threads,
//! and the REST API with Prometheus metrics. Health tests live in
//! `qkeyd-health`; device access lives in `qkeyd-drivers`.
//!
//! Secrets (seed blocks, DRBG state) live only in zeroizing types without
//! `Debug` output of their contents; logs, errors and metrics carry counts,
//! states and sample positions, never sample values or random bytes.
#![forbid(unsafe_code)]

pub mod api;
pub mod assess;
pub mod cli;
pub mod config;
pub mod durable;
pub mod keys_cli;
pub mod kms;
pub mod metrics;
pub mod p11;
pub mod pool;
pub mod serve;
pub mod sources;
pub mod unix_socket;
pub mod vault;
