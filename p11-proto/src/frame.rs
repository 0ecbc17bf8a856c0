//! Frames on the stream: a `u32` big-endian length, then that many payload
//! bytes, never more than [`MAX_FRAME`].

use std::io::{self, Read, Write};

use zeroize::Zeroizing;

use crate::MAX_FRAME;

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

/// Read one frame into a zeroizing buffer; a length over [`MAX_FRAME`] is an
/// error before anything is allocated. `Ok(None)` on a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut first = [0u8; 1];
    loop {
        match r.read(&mut first) {
            Ok(0) => return Ok(None),
            Ok(_) => return read_frame_after(first[0], r).map(Some),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The rest of a frame whose first byte has been read (a server that waits
/// for that byte with a timeout, to do housekeeping while a client is idle).
pub fn read_frame_after(first: u8, r: &mut impl Read) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut len = [first, 0, 0, 0];
    r.read_exact(&mut len[1..])?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over the {MAX_FRAME}-byte limit"),
        ));
    }
    let mut buf = Zeroizing::new(vec![0u8; len]);
    r.read_exact(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"abc").unwrap();
        write_frame(&mut wire, b"").unwrap();
        let mut r = &wire[..];
        assert_eq!(read_frame(&mut r).unwrap().as_deref().map(Vec::as_slice), Some(&b"abc"[..]));
        assert_eq!(read_frame(&mut r).unwrap().as_deref().map(Vec::as_slice), Some(&b""[..]));
        assert!(read_frame(&mut r).unwrap().is_none());
    }
}
