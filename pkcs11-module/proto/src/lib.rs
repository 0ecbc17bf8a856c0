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
#![forbid(unsafe_code)]

use std::{
    fmt,
    io::{self, Read, Write},
};

use zeroize::Zeroizing;

/// Protocol version; `Hello` carries it and a mismatch is refused.
pub const VERSION: u32 = 1;
/// Largest frame either side accepts (a message to sign is the big one).
pub const MAX_FRAME: usize = 16 << 20;
/// Largest seed one `Seed` request may ask for.
pub const MAX_SEED: u32 = 4096;
/// Longest PIN.
pub const MAX_PIN: usize = 256;
/// Longest label.
pub const MAX_LABEL: usize = 128;

/// A post-quantum parameter set, as PKCS#11 3.2 numbers them within a key type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    /// ML-KEM-512.
    MlKem512,
    /// ML-KEM-768.
    MlKem768,
    /// ML-KEM-1024.
    MlKem1024,
    /// ML-DSA-44.
    MlDsa44,
    /// ML-DSA-65.
    MlDsa65,
    /// ML-DSA-87.
    MlDsa87,
}

impl Alg {
    /// Every parameter set.
    pub const ALL: [Self; 6] = [
        Self::MlKem512,
        Self::MlKem768,
        Self::MlKem1024,
        Self::MlDsa44,
        Self::MlDsa65,
        Self::MlDsa87,
    ];

    /// ML-KEM (true) or ML-DSA (false).
    pub fn is_kem(self) -> bool {
        matches!(self, Self::MlKem512 | Self::MlKem768 | Self::MlKem1024)
    }

    /// The CKP_* value (1, 2, 3 within each key type).
    pub fn parameter_set(self) -> u64 {
        match self {
            Self::MlKem512 | Self::MlDsa44 => 1,
            Self::MlKem768 | Self::MlDsa65 => 2,
            Self::MlKem1024 | Self::MlDsa87 => 3,
        }
    }

    /// The parameter set `set` of ML-KEM (`kem`) or ML-DSA.
    pub fn from_parameter_set(kem: bool, set: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.is_kem() == kem && a.parameter_set() == set)
    }

    /// Encoded public key length (FIPS 203 ek, FIPS 204 pk).
    pub fn public_key_len(self) -> usize {
        match self {
            Self::MlKem512 => 800,
            Self::MlKem768 => 1184,
            Self::MlKem1024 => 1568,
            Self::MlDsa44 => 1312,
            Self::MlDsa65 => 1952,
            Self::MlDsa87 => 2592,
        }
    }

    /// ML-DSA signature length, or ML-KEM ciphertext length.
    pub fn output_len(self) -> usize {
        match self {
            Self::MlKem512 => 768,
            Self::MlKem768 => 1088,
            Self::MlKem1024 => 1568,
            Self::MlDsa44 => 2420,
            Self::MlDsa65 => 3309,
            Self::MlDsa87 => 4627,
        }
    }

    /// The name the daemon uses, e.g. `ml-kem-768`.
    pub fn name(self) -> &'static str {
        match self {
            Self::MlKem512 => "ml-kem-512",
            Self::MlKem768 => "ml-kem-768",
            Self::MlKem1024 => "ml-kem-1024",
            Self::MlDsa44 => "ml-dsa-44",
            Self::MlDsa65 => "ml-dsa-65",
            Self::MlDsa87 => "ml-dsa-87",
        }
    }

    fn code(self) -> u8 {
        match self {
            Self::MlKem512 => 1,
            Self::MlKem768 => 2,
            Self::MlKem1024 => 3,
            Self::MlDsa44 => 4,
            Self::MlDsa65 => 5,
            Self::MlDsa87 => 6,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.code() == c)
    }
}

/// Bytes that must not outlive their use: zeroized on drop, `Debug` shows the length.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub Zeroizing<Vec<u8>>);

impl Secret {
    /// Wrap `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// A key as the daemon describes it: public parts only. `key` names it in
/// later requests (`ID/VERSION` for a vault key, `s/N` for a connection's
/// session key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    /// The reference to use in requests.
    pub key: String,
    /// Parameter set.
    pub alg: Alg,
    /// Label.
    pub label: String,
    /// Kept in the vault (true) or only for this connection.
    pub token: bool,
    /// Encoded public key.
    pub public_key: Vec<u8>,
}

/// What the module asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// First request on a connection.
    Hello {
        /// The module's [`VERSION`].
        version: u32,
    },
    /// `len` (≤ [`MAX_SEED`]) bytes from the health-tested pool, to seed the module's DRBG.
    Seed {
        /// How many bytes.
        len: u32,
    },
    /// Log this connection in with the token PIN.
    Login {
        /// The PIN.
        pin: Secret,
    },
    /// Log out; session keys stay until the connection closes.
    Logout,
    /// The vault's keys (current versions).
    List,
    /// Make a key pair: in the vault (`token`) or for this connection only.
    Generate {
        /// Parameter set.
        alg: Alg,
        /// Keep it in the vault.
        token: bool,
        /// Label.
        label: String,
    },
    /// ML-DSA sign.
    Sign {
        /// Key reference.
        key: String,
        /// The message M.
        msg: Vec<u8>,
        /// The FIPS 204 context string (≤ 255 bytes).
        ctx: Vec<u8>,
        /// rnd = 0 (FIPS 204 deterministic variant) instead of fresh randomness.
        deterministic: bool,
    },
    /// ML-DSA verify.
    Verify {
        /// Key reference.
        key: String,
        /// The message.
        msg: Vec<u8>,
        /// The context string.
        ctx: Vec<u8>,
        /// The signature.
        sig: Vec<u8>,
    },
    /// ML-KEM encapsulate to a key.
    Encapsulate {
        /// Key reference.
        key: String,
    },
    /// ML-KEM decapsulate.
    Decapsulate {
        /// Key reference.
        key: String,
        /// The ciphertext.
        ct: Vec<u8>,
    },
    /// Destroy a key (every version of a vault key).
    Destroy {
        /// Key reference.
        key: String,
    },
}

/// Why the daemon refused; the module maps each to a CK_RV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed or out-of-range request.
    BadRequest,
    /// No such key.
    NotFound,
    /// The request needs a logged-in connection.
    NotLoggedIn,
    /// Wrong PIN.
    PinIncorrect,
    /// Too many wrong PINs: refused for a while.
    PinLocked,
    /// No health-tested entropy, or the sealer cannot be reached.
    Unavailable,
    /// The key cannot do that (kind of key, or a bad input for it).
    KeyMismatch,
    /// Anything else.
    Internal,
}

impl ErrorCode {
    const ALL: [Self; 8] = [
        Self::BadRequest,
        Self::NotFound,
        Self::NotLoggedIn,
        Self::PinIncorrect,
        Self::PinLocked,
        Self::Unavailable,
        Self::KeyMismatch,
        Self::Internal,
    ];

    fn code(self) -> u8 {
        match self {
            Self::BadRequest => 1,
            Self::NotFound => 2,
            Self::NotLoggedIn => 3,
            Self::PinIncorrect => 4,
            Self::PinLocked => 5,
            Self::Unavailable => 6,
            Self::KeyMismatch => 7,
            Self::Internal => 8,
        }
    }
}

/// What the daemon answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Answer to `Hello`.
    Hello {
        /// The daemon's [`VERSION`].
        version: u32,
        /// The daemon's software version.
        daemon: String,
        /// A stable token serial (from the state directory).
        serial: String,
    },
    /// Answer to `Seed`.
    Seed(Secret),
    /// Done, nothing to return.
    Done,
    /// Answer to `List`.
    Keys(Vec<KeyEntry>),
    /// Answer to `Generate`.
    Key(KeyEntry),
    /// Answer to `Sign`.
    Signature(Vec<u8>),
    /// Answer to `Verify`.
    Verified(bool),
    /// Answer to `Encapsulate`.
    Encapsulated {
        /// The ciphertext.
        ct: Vec<u8>,
        /// The shared secret.
        secret: Secret,
    },
    /// Answer to `Decapsulate`.
    SharedSecret(Secret),
    /// The request failed.
    Error {
        /// Why.
        code: ErrorCode,
        /// For logs and the application's diagnostics: never a secret.
        message: String,
    },
}

/// A frame that does not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed frame: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

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

struct Enc(Zeroizing<Vec<u8>>);

impl Enc {
    fn new(tag: u8) -> Self {
        Self(Zeroizing::new(vec![tag]))
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn bool(self, v: bool) -> Self {
        self.u8(u8::from(v))
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn bytes(mut self, v: &[u8]) -> Self {
        // Lengths beyond u32 cannot fit a frame; write_frame refuses those.
        let n = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&n.to_be_bytes());
        self.0.extend_from_slice(v);
        self
    }
    fn str(self, v: &str) -> Self {
        self.bytes(v.as_bytes())
    }
    fn key(self, k: &KeyEntry) -> Self {
        self.str(&k.key).u8(k.alg.code()).str(&k.label).bool(k.token).bytes(&k.public_key)
    }
    fn done(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError("a boolean is not 0 or 1")),
        }
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn vec(&mut self) -> Result<Vec<u8>, DecodeError> {
        Ok(self.bytes()?.to_vec())
    }
    fn secret(&mut self) -> Result<Secret, DecodeError> {
        Ok(Secret::new(self.bytes()?.to_vec()))
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        String::from_utf8(self.vec()?).map_err(|_| DecodeError("text is not UTF-8"))
    }
    fn alg(&mut self) -> Result<Alg, DecodeError> {
        Alg::from_code(self.u8()?).ok_or(DecodeError("unknown parameter set"))
    }
    fn key(&mut self) -> Result<KeyEntry, DecodeError> {
        Ok(KeyEntry {
            key: self.string()?,
            alg: self.alg()?,
            label: self.string()?,
            token: self.bool()?,
            public_key: self.vec()?,
        })
    }
    fn end<T>(self, v: T) -> Result<T, DecodeError> {
        if self.0.is_empty() { Ok(v) } else { Err(DecodeError("trailing bytes")) }
    }
}

impl Request {
    /// The payload of this request.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        match self {
            Self::Hello { version } => Enc::new(1).u32(*version),
            Self::Seed { len } => Enc::new(2).u32(*len),
            Self::Login { pin } => Enc::new(3).bytes(pin.expose()),
            Self::Logout => Enc::new(4),
            Self::List => Enc::new(5),
            Self::Generate { alg, token, label } => {
                Enc::new(6).u8(alg.code()).bool(*token).str(label)
            }
            Self::Sign { key, msg, ctx, deterministic } => {
                Enc::new(7).str(key).bytes(msg).bytes(ctx).bool(*deterministic)
            }
            Self::Verify { key, msg, ctx, sig } => {
                Enc::new(8).str(key).bytes(msg).bytes(ctx).bytes(sig)
            }
            Self::Encapsulate { key } => Enc::new(9).str(key),
            Self::Decapsulate { key, ct } => Enc::new(10).str(key).bytes(ct),
            Self::Destroy { key } => Enc::new(11).str(key),
        }
        .done()
    }

    /// Decode a payload.
    pub fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Dec(p);
        let r = match d.u8()? {
            1 => Self::Hello { version: d.u32()? },
            2 => Self::Seed { len: d.u32()? },
            3 => Self::Login { pin: d.secret()? },
            4 => Self::Logout,
            5 => Self::List,
            6 => Self::Generate { alg: d.alg()?, token: d.bool()?, label: d.string()? },
            7 => Self::Sign {
                key: d.string()?,
                msg: d.vec()?,
                ctx: d.vec()?,
                deterministic: d.bool()?,
            },
            8 => Self::Verify { key: d.string()?, msg: d.vec()?, ctx: d.vec()?, sig: d.vec()? },
            9 => Self::Encapsulate { key: d.string()? },
            10 => Self::Decapsulate { key: d.string()?, ct: d.vec()? },
            11 => Self::Destroy { key: d.string()? },
            _ => return Err(DecodeError("unknown request")),
        };
        d.end(r)
    }
}

impl Response {
    /// The payload of this response.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        match self {
            Self::Hello { version, daemon, serial } => {
                Enc::new(1).u32(*version).str(daemon).str(serial)
            }
            Self::Seed(s) => Enc::new(2).bytes(s.expose()),
            Self::Done => Enc::new(3),
            Self::Keys(keys) => {
                let n = u32::try_from(keys.len()).unwrap_or(u32::MAX);
                keys.iter().fold(Enc::new(4).u32(n), Enc::key)
            }
            Self::Key(k) => Enc::new(5).key(k),
            Self::Signature(s) => Enc::new(6).bytes(s),
            Self::Verified(ok) => Enc::new(7).bool(*ok),
            Self::Encapsulated { ct, secret } => Enc::new(8).bytes(ct).bytes(secret.expose()),
            Self::SharedSecret(s) => Enc::new(9).bytes(s.expose()),
            Self::Error { code, message } => Enc::new(10).u8(code.code()).str(message),
        }
        .done()
    }

    /// Decode a payload.
    pub fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Dec(p);
        let r = match d.u8()? {
            1 => Self::Hello { version: d.u32()?, daemon: d.string()?, serial: d.string()? },
            2 => Self::Seed(d.secret()?),
            3 => Self::Done,
            4 => {
                let n = d.u32()? as usize;
                // Each entry takes at least 14 bytes: bound the allocation by the frame.
                let mut keys = Vec::with_capacity(n.min(p.len() / 14));
                for _ in 0..n {
                    keys.push(d.key()?);
                }
                Self::Keys(keys)
            }
            5 => Self::Key(d.key()?),
            6 => Self::Signature(d.vec()?),
            7 => Self::Verified(d.bool()?),
            8 => Self::Encapsulated { ct: d.vec()?, secret: d.secret()? },
            9 => Self::SharedSecret(d.secret()?),
            10 => {
                let code = d.u8()?;
                let code = ErrorCode::ALL
                    .into_iter()
                    .find(|c| c.code() == code)
                    .unwrap_or(ErrorCode::Internal);
                Self::Error { code, message: d.string()? }
            }
            _ => return Err(DecodeError("unknown response")),
        };
        d.end(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests() -> Vec<Request> {
        vec![
            Request::Hello { version: VERSION },
            Request::Seed { len: 48 },
            Request::Login { pin: Secret::new(b"1234".to_vec()) },
            Request::Logout,
            Request::List,
            Request::Generate { alg: Alg::MlDsa65, token: true, label: "sig".into() },
            Request::Sign {
                key: "ab/1".into(),
                msg: vec![1; 40],
                ctx: vec![2; 3],
                deterministic: true,
            },
            Request::Verify { key: "s/1".into(), msg: vec![], ctx: vec![], sig: vec![9; 3309] },
            Request::Encapsulate { key: "s/2".into() },
            Request::Decapsulate { key: "s/2".into(), ct: vec![5; 1088] },
            Request::Destroy { key: "ab/1".into() },
        ]
    }

    fn responses() -> Vec<Response> {
        let k = KeyEntry {
            key: "ab/1".into(),
            alg: Alg::MlKem768,
            label: "kem".into(),
            token: true,
            public_key: vec![3; 1184],
        };
        vec![
            Response::Hello { version: 1, daemon: "0.1.0".into(), serial: "00ff".into() },
            Response::Seed(Secret::new(vec![1; 48])),
            Response::Done,
            Response::Keys(vec![k.clone(), KeyEntry { token: false, ..k.clone() }]),
            Response::Keys(vec![]),
            Response::Key(k),
            Response::Signature(vec![4; 2420]),
            Response::Verified(false),
            Response::Encapsulated { ct: vec![1; 768], secret: Secret::new(vec![2; 32]) },
            Response::SharedSecret(Secret::new(vec![7; 32])),
            Response::Error { code: ErrorCode::PinIncorrect, message: "wrong PIN".into() },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for r in requests() {
            assert_eq!(Request::decode(&r.encode()).as_ref(), Ok(&r));
        }
        for r in responses() {
            assert_eq!(Response::decode(&r.encode()).as_ref(), Ok(&r));
        }
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        for r in requests() {
            let p = r.encode();
            for n in 0..p.len() {
                assert!(Request::decode(&p[..n]).is_err(), "{r:?} cut to {n}");
            }
            let mut longer = p.to_vec();
            longer.push(0);
            assert_eq!(Request::decode(&longer), Err(DecodeError("trailing bytes")));
        }
        for r in responses() {
            let p = r.encode();
            for n in 0..p.len() {
                assert!(Response::decode(&p[..n]).is_err(), "{r:?} cut to {n}");
            }
        }
    }

    #[test]
    fn hostile_lengths_do_not_allocate() {
        // A Keys response claiming 2^32-1 entries in a 6-byte frame.
        assert!(Response::decode(&[4, 0xff, 0xff, 0xff, 0xff, 0]).is_err());
        // A frame header over the limit is refused before reading the body.
        let mut r: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        assert_eq!(
            read_frame(&mut r).map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::InvalidData)
        );
        assert_eq!(Request::decode(&[42]), Err(DecodeError("unknown request")));
        assert_eq!(
            Request::decode(&[6, 9, 0, 0, 0, 0, 0]),
            Err(DecodeError("unknown parameter set"))
        );
        assert_eq!(
            Request::decode(&[6, 1, 2, 0, 0, 0, 0]),
            Err(DecodeError("a boolean is not 0 or 1"))
        );
    }

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

    #[test]
    fn secrets_do_not_show_in_debug() {
        let s = format!("{:?}", Request::Login { pin: Secret::new(b"hunter2".to_vec()) });
        assert!(!s.contains("hunter2") && s.contains("7 bytes"), "{s}");
        let s = format!("{:?}", Response::SharedSecret(Secret::new(vec![0xAB; 32])));
        assert!(!s.contains("171") && s.contains("32 bytes"), "{s}");
    }

    #[test]
    fn parameter_sets_match_pkcs11() {
        assert_eq!(Alg::from_parameter_set(false, 2), Some(Alg::MlDsa65));
        assert_eq!(Alg::from_parameter_set(true, 3), Some(Alg::MlKem1024));
        assert_eq!(Alg::from_parameter_set(true, 4), None);
        assert_eq!(Alg::from_parameter_set(false, 0), None);
    }
}
