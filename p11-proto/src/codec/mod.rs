//! The payload encoding: a one-byte tag and the tag's fields, integers
//! big-endian, byte strings and text with a `u32` length first. Decoding
//! checks every length against what is left and refuses trailing bytes.

use std::fmt;

use zeroize::Zeroizing;

use crate::{
    Algorithm, Attribute, ErrorCode, KeyEntry, KeySource, MAX_ATTRIBUTES, MAX_CONTEXT,
    MAX_ERROR_MESSAGE, MAX_FRAME, MAX_KEY_REF, MAX_LABEL, MAX_MESSAGE, MAX_OBJECT, MAX_OBJECT_ID,
    MAX_PIN, MAX_SECRET, MAX_SEED, PinCount, Prf, Request, Response, Secret, StoredObject,
};

/// The longest ML-KEM ciphertext or ML-DSA signature (ML-DSA-87's).
const MAX_OUTPUT: usize = 4627;
/// The longest encoded public key (ML-DSA-87's).
const MAX_PUBLIC_KEY: usize = 2592;
/// The longest shared secret.
const MAX_SHARED_SECRET: usize = 64;
/// The longest daemon version or token serial in a `Hello`.
const MAX_NAME: usize = 256;
/// A byte string or text field of at most `n` bytes: its length, then it.
const fn field(n: usize) -> usize {
    4 + n
}
/// The longest attribute list of a stored object.
const MAX_ATTRIBUTE_LIST: usize = 4 + MAX_ATTRIBUTES * (8 + 4) + MAX_OBJECT;
/// The longest [`KeyEntry`].
const MAX_KEY_ENTRY: usize = field(MAX_KEY_REF) + 1 + field(MAX_LABEL) + 1 + field(MAX_PUBLIC_KEY);

/// The wire code of an HKDF hash.
fn prf_code(p: Prf) -> u8 {
    match p {
        Prf::Sha256 => 1,
        Prf::Sha384 => 2,
        Prf::Sha512 => 3,
    }
}

/// The longest key source: a held key's reference, or a value.
const MAX_SOURCE: usize =
    1 + field(if MAX_KEY_REF > MAX_SECRET { MAX_KEY_REF } else { MAX_SECRET });
/// The longest HKDF salt or info.
const MAX_SALT: usize = 1024;
/// The longest AES-GCM input or output: a message and its tag.
const MAX_GCM: usize = MAX_MESSAGE + 16;

/// The wire code of a parameter set.
fn alg_code(a: Algorithm) -> u8 {
    match a {
        Algorithm::MlKem512 => 1,
        Algorithm::MlKem768 => 2,
        Algorithm::MlKem1024 => 3,
        Algorithm::MlDsa44 => 4,
        Algorithm::MlDsa65 => 5,
        Algorithm::MlDsa87 => 6,
    }
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

impl ErrorCode {
    const ALL: [Self; 13] = [
        Self::BadRequest,
        Self::NotFound,
        Self::NotLoggedIn,
        Self::PinIncorrect,
        Self::PinLocked,
        Self::Unavailable,
        Self::KeyMismatch,
        Self::Internal,
        Self::PinLength,
        Self::PinFixed,
        Self::NotSoLoggedIn,
        Self::TooLarge,
        Self::AuthFailed,
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
            Self::PinLength => 9,
            Self::PinFixed => 10,
            Self::NotSoLoggedIn => 11,
            Self::TooLarge => 12,
            Self::AuthFailed => 13,
        }
    }
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
    fn u64(self, v: u64) -> Self {
        self.u32((v >> 32) as u32).u32(v as u32)
    }
    fn key(self, k: &KeyEntry) -> Self {
        self.str(&k.key).u8(alg_code(k.alg)).str(&k.label).bool(k.token).bytes(&k.public_key)
    }
    fn attrs(self, attrs: &[Attribute]) -> Self {
        let n = u32::try_from(attrs.len()).unwrap_or(u32::MAX);
        attrs.iter().fold(self.u32(n), |e, (t, v)| e.u64(*t).bytes(v))
    }
    fn object(self, o: &StoredObject) -> Self {
        self.str(&o.id).bool(o.private).attrs(&o.attrs)
    }
    fn source(self, k: &KeySource) -> Self {
        match k {
            KeySource::Held(key) => self.u8(0).str(key),
            KeySource::Value(v) => self.u8(1).bytes(v.expose()),
        }
    }
    fn pin_count(self, c: &PinCount) -> Self {
        self.u32(c.failures).u32(c.tries).bool(c.locked)
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
    fn alg(&mut self) -> Result<Algorithm, DecodeError> {
        let code = self.u8()?;
        Algorithm::ALL
            .into_iter()
            .find(|a| alg_code(*a) == code)
            .ok_or(DecodeError("unknown parameter set"))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from(self.u32()?) << 32 | u64::from(self.u32()?))
    }
    fn attrs(&mut self) -> Result<Vec<Attribute>, DecodeError> {
        let n = self.u32()? as usize;
        if n > MAX_ATTRIBUTES {
            return Err(DecodeError("too many attributes"));
        }
        let mut attrs = Vec::with_capacity(n);
        let mut total = 0usize;
        for _ in 0..n {
            let t = self.u64()?;
            let v = self.vec()?;
            total += v.len();
            if total > MAX_OBJECT {
                return Err(DecodeError("object too large"));
            }
            attrs.push((t, v));
        }
        Ok(attrs)
    }
    fn object(&mut self) -> Result<StoredObject, DecodeError> {
        Ok(StoredObject { id: self.string()?, private: self.bool()?, attrs: self.attrs()? })
    }
    fn source(&mut self) -> Result<KeySource, DecodeError> {
        match self.u8()? {
            0 => Ok(KeySource::Held(self.string()?)),
            1 => Ok(KeySource::Value(self.secret()?)),
            _ => Err(DecodeError("unknown key source")),
        }
    }
    fn prf(&mut self) -> Result<Prf, DecodeError> {
        match self.u8()? {
            1 => Ok(Prf::Sha256),
            2 => Ok(Prf::Sha384),
            3 => Ok(Prf::Sha512),
            _ => Err(DecodeError("unknown HKDF hash")),
        }
    }
    fn pin_count(&mut self) -> Result<PinCount, DecodeError> {
        Ok(PinCount { failures: self.u32()?, tries: self.u32()?, locked: self.bool()? })
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
    /// The longest payload a request whose tag (first byte) is `tag` can
    /// have, or `None` for a tag that is no request.
    pub fn max_len(tag: u8) -> Option<usize> {
        Some(match tag {
            1 | 2 => 1 + 4,
            3 => 1 + 1 + field(MAX_PIN),
            4 | 5 | 14 | 15 => 1,
            6 => 1 + 1 + 1 + field(MAX_LABEL),
            7 => 1 + field(MAX_KEY_REF) + field(MAX_MESSAGE) + field(MAX_CONTEXT) + 1,
            8 => {
                1 + field(MAX_KEY_REF) + field(MAX_MESSAGE) + field(MAX_CONTEXT) + field(MAX_OUTPUT)
            }
            9 | 11 => 1 + field(MAX_KEY_REF),
            10 => 1 + field(MAX_KEY_REF) + field(MAX_OUTPUT),
            12 => 1 + field(MAX_PIN),
            13 => 1 + field(MAX_PIN) + field(MAX_PIN),
            16 => 1 + field(MAX_OBJECT_ID) + 1 + MAX_ATTRIBUTE_LIST,
            17 => 1 + field(MAX_OBJECT_ID),
            18 => 1 + 4,
            19 => 1 + field(MAX_KEY_REF) + field(MAX_OUTPUT),
            20 => 1 + field(MAX_KEY_REF),
            21 => 1 + 1 + field(MAX_PUBLIC_KEY) + 1,
            22 => {
                1 + 1
                    + field(MAX_PUBLIC_KEY)
                    + field(MAX_MESSAGE)
                    + field(MAX_CONTEXT)
                    + field(MAX_OUTPUT)
            }
            23 => 1 + MAX_SOURCE + 1 + 1 + 1 + field(MAX_SALT) + field(MAX_SALT) + 4 + 1,
            24 => 1 + MAX_SOURCE + 1 + field(16) + field(MAX_MESSAGE) + field(MAX_GCM),
            _ => return None,
        })
    }

    /// The payload of this request.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        match self {
            Self::Hello { version } => Enc::new(1).u32(*version),
            Self::Seed { len } => Enc::new(2).u32(*len),
            Self::Login { so, pin } => Enc::new(3).bool(*so).bytes(pin.expose()),
            Self::Logout => Enc::new(4),
            Self::List => Enc::new(5),
            Self::Generate { alg, token, label } => {
                Enc::new(6).u8(alg_code(*alg)).bool(*token).str(label)
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
            Self::InitPin { pin } => Enc::new(12).bytes(pin.expose()),
            Self::SetPin { old, new } => Enc::new(13).bytes(old.expose()).bytes(new.expose()),
            Self::PinState => Enc::new(14),
            Self::ListObjects => Enc::new(15),
            Self::PutObject { id, private, attrs } => {
                Enc::new(16).str(id).bool(*private).attrs(attrs)
            }
            Self::DestroyObject { id } => Enc::new(17).str(id),
            Self::GenerateSecret { len } => Enc::new(18).u32(*len),
            Self::DecapsulateKept { key, ct } => Enc::new(19).str(key).bytes(ct),
            Self::EncapsulateKept { key } => Enc::new(20).str(key),
            Self::EncapsulateTo { alg, public_key, keep } => {
                Enc::new(21).u8(alg_code(*alg)).bytes(public_key).bool(*keep)
            }
            Self::VerifyWith { alg, public_key, msg, ctx, sig } => {
                Enc::new(22).u8(alg_code(*alg)).bytes(public_key).bytes(msg).bytes(ctx).bytes(sig)
            }
            Self::Derive { base, prf, extract, expand, salt, info, len, keep } => Enc::new(23)
                .source(base)
                .u8(prf_code(*prf))
                .bool(*extract)
                .bool(*expand)
                .bytes(salt)
                .bytes(info)
                .u32(*len)
                .bool(*keep),
            Self::AesGcm { key, encrypt, iv, aad, data } => {
                Enc::new(24).source(key).bool(*encrypt).bytes(iv).bytes(aad).bytes(data)
            }
        }
        .done()
    }

    /// Decode a payload.
    pub fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Dec(p);
        let r = match d.u8()? {
            1 => Self::Hello { version: d.u32()? },
            2 => Self::Seed { len: d.u32()? },
            3 => Self::Login { so: d.bool()?, pin: d.secret()? },
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
            12 => Self::InitPin { pin: d.secret()? },
            13 => Self::SetPin { old: d.secret()?, new: d.secret()? },
            14 => Self::PinState,
            15 => Self::ListObjects,
            16 => Self::PutObject { id: d.string()?, private: d.bool()?, attrs: d.attrs()? },
            17 => Self::DestroyObject { id: d.string()? },
            18 => Self::GenerateSecret { len: d.u32()? },
            19 => Self::DecapsulateKept { key: d.string()?, ct: d.vec()? },
            20 => Self::EncapsulateKept { key: d.string()? },
            21 => Self::EncapsulateTo { alg: d.alg()?, public_key: d.vec()?, keep: d.bool()? },
            22 => Self::VerifyWith {
                alg: d.alg()?,
                public_key: d.vec()?,
                msg: d.vec()?,
                ctx: d.vec()?,
                sig: d.vec()?,
            },
            23 => Self::Derive {
                base: d.source()?,
                prf: d.prf()?,
                extract: d.bool()?,
                expand: d.bool()?,
                salt: d.vec()?,
                info: d.vec()?,
                len: d.u32()?,
                keep: d.bool()?,
            },
            24 => Self::AesGcm {
                key: d.source()?,
                encrypt: d.bool()?,
                iv: d.vec()?,
                aad: d.vec()?,
                data: d.vec()?,
            },
            _ => return Err(DecodeError("unknown request")),
        };
        d.end(r)
    }
}

impl Response {
    /// The longest payload a response whose tag (first byte) is `tag` can
    /// have, or `None` for a tag that is no response. A key list is bounded
    /// only by [`MAX_FRAME`].
    pub fn max_len(tag: u8) -> Option<usize> {
        Some(match tag {
            1 => 1 + 4 + field(MAX_NAME) + field(MAX_NAME),
            2 => 1 + field(MAX_SEED as usize),
            3 => 1,
            4 => MAX_FRAME,
            5 => 1 + MAX_KEY_ENTRY,
            6 => 1 + field(MAX_OUTPUT),
            7 => 2,
            8 => 1 + field(MAX_OUTPUT) + field(MAX_SHARED_SECRET),
            9 => 1 + field(MAX_SHARED_SECRET),
            10 => 1 + 1 + field(MAX_ERROR_MESSAGE),
            11 => 1 + 2 * (4 + 4 + 1),
            12 => MAX_FRAME,
            13 => 1 + field(MAX_OBJECT_ID),
            14 => 1 + field(MAX_KEY_REF) + 4,
            15 => 1 + field(MAX_OUTPUT) + field(MAX_KEY_REF),
            16 => 1 + field(MAX_GCM),
            _ => return None,
        })
    }

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
            Self::PinState { user, so } => Enc::new(11).pin_count(user).pin_count(so),
            Self::Objects(objects) => {
                let n = u32::try_from(objects.len()).unwrap_or(u32::MAX);
                objects.iter().fold(Enc::new(12).u32(n), Enc::object)
            }
            Self::ObjectId(id) => Enc::new(13).str(id),
            Self::Secret { key, len } => Enc::new(14).str(key).u32(*len),
            Self::EncapsulatedKept { ct, key } => Enc::new(15).bytes(ct).str(key),
            Self::Output(o) => Enc::new(16).bytes(o),
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
            11 => Self::PinState { user: d.pin_count()?, so: d.pin_count()? },
            12 => {
                let n = d.u32()? as usize;
                // Each object takes at least 9 bytes: bound the allocation by the frame.
                let mut objects = Vec::with_capacity(n.min(p.len() / 9));
                for _ in 0..n {
                    objects.push(d.object()?);
                }
                Self::Objects(objects)
            }
            13 => Self::ObjectId(d.string()?),
            14 => Self::Secret { key: d.string()?, len: d.u32()? },
            15 => Self::EncapsulatedKept { ct: d.vec()?, key: d.string()? },
            16 => Self::Output(d.vec()?),
            _ => return Err(DecodeError("unknown response")),
        };
        d.end(r)
    }
}

#[cfg(test)]
mod tests;
