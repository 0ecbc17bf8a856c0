//! The TLS side of the `qkeyd keys` / `qkeyd kms` clients.
