//! Frames on the stream: a `u32` big-endian length, then that many payload
//! bytes. The payload's first byte is the message tag, and each tag has its
//! own longest payload ([`Limits`]): a reader checks the declared length
//! against it as soon as the tag has arrived, and then allocates only for
//! bytes that have actually arrived, so a peer's word never sizes a buffer.

use std::io::{self, Read, Write};

use zeroize::Zeroizing;

use crate::{MAX_FRAME, Request, Response};

/// A buffer grows by at most this much per step while a frame arrives.
const CHUNK: usize = 64 << 10;

/// The longest payload a reader accepts for each tag: requests (the daemon
/// reads them) or responses (the module reads them).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    max_len: fn(u8) -> Option<usize>,
    what: &'static str,
}

impl Limits {
    /// What the daemon accepts from the module.
    pub const REQUESTS: Self = Self { max_len: Request::max_len, what: "request" };
    /// What the module accepts from the daemon.
    pub const RESPONSES: Self = Self { max_len: Response::max_len, what: "response" };
}

/// Write one frame.
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    // One write, so a frame is never split by a concurrent writer's bytes.
    let mut buf = Zeroizing::new(Vec::with_capacity(4 + payload.len()));
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)?;
    w.flush()
}

/// Read one frame into a zeroizing buffer, checked against `limits`.
/// `Ok(None)` on a clean end of stream.
pub fn read_message(r: &mut impl Read, limits: Limits) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut first = [0u8; 1];
    loop {
        match r.read(&mut first) {
            Ok(0) => return Ok(None),
            Ok(_) => return read_message_after(first[0], r, limits).map(Some),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The rest of a frame whose first byte has been read (a server waits for
/// that byte with its idle timeout, and for the rest with a shorter one).
/// A length over the tag's limit, an unknown tag or an empty frame is
/// `InvalidData` before anything is allocated; the stream is then out of
/// step and should be closed.
pub fn read_message_after(
    first: u8,
    r: &mut impl Read,
    limits: Limits,
) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut len = [first, 0, 0, 0];
    r.read_exact(&mut len[1..])?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 {
        return Err(invalid(format!("an empty {} frame", limits.what)));
    }
    let mut tag = [0u8; 1];
    r.read_exact(&mut tag)?;
    let Some(max) = (limits.max_len)(tag[0]) else {
        return Err(invalid(format!("unknown {} tag {}", limits.what, tag[0])));
    };
    if len > max {
        return Err(invalid(format!(
            "a {} with tag {} of {len} bytes is over its {max}-byte limit",
            limits.what, tag[0]
        )));
    }
    read_body(tag[0], len, r)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Read a `len`-byte payload whose first byte `tag` has arrived. The buffer
/// is at most twice what has arrived (and at least [`CHUNK`]); it grows by
/// hand, since `Vec`'s own growth would free the old one without zeroizing it.
fn read_body(tag: u8, len: usize, r: &mut impl Read) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(vec![0u8; len.min(CHUNK)]);
    buf[0] = tag;
    let mut filled = 1;
    while filled < len {
        if filled == buf.len() {
            let mut bigger = Zeroizing::new(vec![0u8; len.min(filled.saturating_mul(2))]);
            bigger[..filled].copy_from_slice(&buf[..filled]);
            buf = bigger;
        }
        match r.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the stream ended inside a frame",
                ));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Secret, VERSION};

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &Request::Hello { version: VERSION }.encode()).unwrap();
        write_frame(&mut wire, &Request::List.encode()).unwrap();
        let mut r = &wire[..];
        let first = read_message(&mut r, Limits::REQUESTS).unwrap().unwrap();
        assert_eq!(Request::decode(&first), Ok(Request::Hello { version: VERSION }));
        let second = read_message(&mut r, Limits::REQUESTS).unwrap().unwrap();
        assert_eq!(Request::decode(&second), Ok(Request::List));
        assert!(read_message(&mut r, Limits::REQUESTS).unwrap().is_none());
    }

    fn refused(wire: &[u8], limits: Limits) -> io::ErrorKind {
        let mut r = wire;
        read_message(&mut r, limits).map(|_| ()).unwrap_err().kind()
    }

    #[test]
    fn a_length_over_the_tags_limit_is_refused_before_the_body() {
        // A Login (tag 3) claiming 16 MiB: only five bytes follow the header,
        // and the answer comes from the tag, not from reading 16 MiB.
        let mut wire = (16u32 << 20).to_be_bytes().to_vec();
        wire.extend_from_slice(&[3, 0, 0, 0, 4]);
        assert_eq!(refused(&wire, Limits::REQUESTS), io::ErrorKind::InvalidData);
        // The same length for a Keys response (tag 4) is allowed: the body is short, so EOF.
        wire[4] = 4;
        assert_eq!(refused(&wire, Limits::RESPONSES), io::ErrorKind::UnexpectedEof);
        // Unknown tags and empty frames.
        assert_eq!(refused(&[0, 0, 0, 2, 99, 0], Limits::REQUESTS), io::ErrorKind::InvalidData);
        assert_eq!(refused(&[0, 0, 0, 0], Limits::REQUESTS), io::ErrorKind::InvalidData);
        assert_eq!(
            refused(&[0xff, 0xff, 0xff, 0xff, 4], Limits::RESPONSES),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn every_request_fits_its_limit_at_the_largest_sizes() {
        use crate::{
            Algorithm, MAX_ATTRIBUTES, MAX_CONTEXT, MAX_KEY_REF, MAX_LABEL, MAX_MESSAGE,
            MAX_OBJECT, MAX_OBJECT_ID, MAX_PIN,
        };
        let key = "k".repeat(MAX_KEY_REF);
        let big_sig = Algorithm::ALL.into_iter().map(Algorithm::output_len).max().unwrap();
        let requests = [
            Request::Login { so: false, pin: Secret::new(vec![b'1'; MAX_PIN]) },
            Request::Generate {
                alg: Algorithm::MlDsa87,
                token: true,
                label: "l".repeat(MAX_LABEL),
            },
            Request::Sign {
                key: key.clone(),
                msg: vec![0; MAX_MESSAGE],
                ctx: vec![0; MAX_CONTEXT],
                deterministic: false,
            },
            Request::Verify {
                key: key.clone(),
                msg: vec![0; MAX_MESSAGE],
                ctx: vec![0; MAX_CONTEXT],
                sig: vec![0; big_sig],
            },
            Request::Decapsulate { key: key.clone(), ct: vec![0; big_sig] },
            Request::Destroy { key },
            Request::SetPin {
                old: Secret::new(vec![b'1'; MAX_PIN]),
                new: Secret::new(vec![b'2'; MAX_PIN]),
            },
            Request::PutObject {
                id: "o".repeat(MAX_OBJECT_ID),
                private: true,
                attrs: (0..MAX_ATTRIBUTES as u64)
                    .map(|t| (u64::MAX - t, vec![7; MAX_OBJECT / MAX_ATTRIBUTES]))
                    .collect(),
            },
        ];
        for req in requests {
            let mut wire = Vec::new();
            write_frame(&mut wire, &req.encode()).unwrap();
            let got = read_message(&mut &wire[..], Limits::REQUESTS).unwrap().unwrap();
            assert_eq!(Request::decode(&got).as_ref(), Ok(&req));
        }
    }

    /// A reader that hands out one byte per call, as a slow peer would.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let Some((&b, rest)) = self.0.split_first() else { return Ok(0) };
            buf[0] = b;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn a_frame_arriving_byte_by_byte_reads_whole() {
        let req = Request::Sign {
            key: "ab/1".into(),
            msg: (0..200_000u32).map(|i| i as u8).collect(),
            ctx: vec![],
            deterministic: true,
        };
        let mut wire = Vec::new();
        write_frame(&mut wire, &req.encode()).unwrap();
        let got = read_message(&mut Trickle(&wire), Limits::REQUESTS).unwrap().unwrap();
        assert_eq!(Request::decode(&got), Ok(req));
    }
}
