//! Frames on the stream, either direction: the first byte picks the reader's
//! limits (bit 0: requests, as the daemon reads, or responses, as the module
//! reads) and how many bytes each `read` hands out (bits 1..: 1 to 128, a slow
//! or a fast peer); the rest is the stream. Each frame read is exactly the
//! payload on the wire, within its tag's limit, and is then decoded.
#![no_main]

use std::io::{self, Read};

use qkeyd_p11_proto::{Limits, Request, Response, read_message};

/// A stream that hands out at most `step` bytes per read.
struct Peer<'a> {
    rest: &'a [u8],
    step: usize,
}

impl Read for Peer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.step).min(self.rest.len());
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Ok(n)
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else { return };
    let requests = mode & 1 == 0;
    let limits = if requests { Limits::REQUESTS } else { Limits::RESPONSES };
    let mut peer = Peer { rest: stream, step: usize::from(mode >> 1) + 1 };
    let mut at = 0;
    while let Ok(Some(payload)) = read_message(&mut peer, limits) {
        let len = u32::from_be_bytes(stream[at..at + 4].try_into().unwrap()) as usize;
        assert_eq!(&payload[..], &stream[at + 4..at + 4 + len], "a frame read other bytes");
        let tag = payload[0];
        if requests {
            assert!(len <= Request::max_len(tag).unwrap(), "a request over its limit was read");
            let _ = Request::decode(&payload);
        } else {
            assert!(len <= Response::max_len(tag).unwrap(), "a response over its limit was read");
            let _ = Response::decode(&payload);
        }
        at += 4 + len;
    }
});
