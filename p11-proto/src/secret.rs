//! [`Secret`]: bytes that must not outlive their use.

use std::fmt;

use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

/// Bytes that must not outlive their use: zeroized on drop, `Debug` shows the
/// length, equality in constant time. Not `Clone`: a PIN, seed or shared secret
/// is moved to where it is used, never copied.
#[derive(Default)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        // Lengths are public (they are on the wire); the contents are compared
        // without an early exit.
        self.0.len() == other.0.len() && bool::from(self.0.ct_eq(&other.0))
    }
}

impl Eq for Secret {}

impl Secret {
    /// Wrap `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, still zeroizing, for a caller that keeps them.
    pub fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.0
    }

    /// A second copy, for the one holder that must send the same secret
    /// again: the module logs a new connection in with the PIN it was given.
    /// A method rather than `Clone`, so every copy is one a reader can find.
    pub fn duplicate(&self) -> Self {
        Self(self.0.clone())
    }
}

impl From<Zeroizing<Vec<u8>>> for Secret {
    fn from(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Request, Response, Secret};

    #[test]
    fn secrets_do_not_show_in_debug() {
        let s =
            format!("{:?}", Request::Login { so: false, pin: Secret::new(b"hunter2".to_vec()) });
        assert!(!s.contains("hunter2") && s.contains("7 bytes"), "{s}");
        let s = format!("{:?}", Response::SharedSecret(Secret::new(vec![0xAB; 32])));
        assert!(!s.contains("171") && s.contains("32 bytes"), "{s}");
    }
}
