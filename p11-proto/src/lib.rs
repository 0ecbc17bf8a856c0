//! The protocol between `libqkeyd_pkcs11.so` and the daemon, over a unix
//! stream socket: one request, then one response, in order, each a frame of
//! `u32` big-endian length and that many payload bytes.
//!
//! A payload is a one-byte tag and the tag's fields. Integers are big-endian;
//! byte strings and text carry a `u32` length first. A decoder checks every
//! length against what is left and refuses trailing bytes, so a frame either
//! decodes whole or is an error. Frames that can hold a PIN, a seed or a
//! shared secret are read into zeroizing buffers, and those fields are
//! zeroizing types whose `Debug` shows only a length.
//!
//! The crate is split by concern: `message.rs` holds the requests and
//! responses, `codec.rs` their encoding, `frame.rs` the framing on the
//! stream, and `secret.rs` the zeroizing [`Secret`].
#![forbid(unsafe_code)]

pub use qkeyd_pqc::Algorithm;

pub use self::{
    codec::DecodeError,
    frame::{Limits, read_message, read_message_after, write_frame},
    message::{
        Attribute, ErrorCode, KeyEntry, KeySource, PinCount, Prf, Request, Response, StoredObject,
    },
    secret::Secret,
};

mod codec;
mod frame;
mod message;
mod secret;

/// Protocol version; `Hello` carries it and a mismatch is refused.
pub const VERSION: u32 = 2;
/// Largest frame either side accepts: a response listing many keys is the
/// big one. Each message has its own, much smaller limit ([`Limits`]).
pub const MAX_FRAME: usize = 16 << 20;
/// Longest message to sign or verify.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Longest FIPS 204 context string.
pub const MAX_CONTEXT: usize = 255;
/// Longest key reference (`ID/VERSION` or `s/N`).
pub const MAX_KEY_REF: usize = 256;
/// Longest error message the daemon sends.
pub const MAX_ERROR_MESSAGE: usize = 4096;
/// Largest seed one `Seed` request may ask for.
pub const MAX_SEED: u32 = 4096;
/// Longest PIN.
pub const MAX_PIN: usize = 256;
/// Longest label.
pub const MAX_LABEL: usize = 128;
/// Most attributes one stored object has.
pub const MAX_ATTRIBUTES: usize = 64;
/// Largest stored object: the sum of its attribute values.
pub const MAX_OBJECT: usize = 64 << 10;
/// Longest secret key the daemon holds or derives.
pub const MAX_SECRET: usize = 64;
/// Longest stored object id.
pub const MAX_OBJECT_ID: usize = 64;
