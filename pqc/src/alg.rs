//! The parameter sets, and the facts about them that every side needs.

use std::fmt;

/// A supported algorithm and parameter set.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
pub enum Algorithm {
    /// ML-KEM-512.
    #[cfg_attr(feature = "serde", serde(rename = "ml-kem-512"))]
    MlKem512,
    /// ML-KEM-768.
    #[cfg_attr(feature = "serde", serde(rename = "ml-kem-768"))]
    MlKem768,
    /// ML-KEM-1024.
    #[cfg_attr(feature = "serde", serde(rename = "ml-kem-1024"))]
    MlKem1024,
    /// ML-DSA-44.
    #[cfg_attr(feature = "serde", serde(rename = "ml-dsa-44"))]
    MlDsa44,
    /// ML-DSA-65.
    #[cfg_attr(feature = "serde", serde(rename = "ml-dsa-65"))]
    MlDsa65,
    /// ML-DSA-87.
    #[cfg_attr(feature = "serde", serde(rename = "ml-dsa-87"))]
    MlDsa87,
}

impl Algorithm {
    /// Every algorithm, in a fixed order.
    pub const ALL: [Self; 6] = [
        Self::MlKem512,
        Self::MlKem768,
        Self::MlKem1024,
        Self::MlDsa44,
        Self::MlDsa65,
        Self::MlDsa87,
    ];

    /// The name used in the API, on disk and on the wire, e.g. `ml-kem-768`.
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

    /// Parse a name; case and `_`/`-` are not significant (`ML-KEM-768`, `ml_kem_768`).
    pub fn parse(s: &str) -> Option<Self> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        Self::ALL.into_iter().find(|a| a.name() == norm)
    }

    /// ML-KEM (true) or ML-DSA (false).
    pub fn is_kem(self) -> bool {
        matches!(self, Self::MlKem512 | Self::MlKem768 | Self::MlKem1024)
    }

    /// Length of the seed that is the private key: d ‖ z (64 bytes) for
    /// ML-KEM, ξ (32 bytes) for ML-DSA.
    pub fn seed_len(self) -> usize {
        if self.is_kem() { 64 } else { 32 }
    }

    /// The PKCS#11 3.2 parameter-set number (`CKP_ML_KEM_*`, `CKP_ML_DSA_*`):
    /// 1, 2, 3 within each key type.
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

    /// What a private operation puts out: the ML-KEM ciphertext length
    /// (FIPS 203 Table 3), or the ML-DSA signature length (FIPS 204 Table 2).
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
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_parse_loosely() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::parse(a.name()), Some(a));
            assert_eq!(Algorithm::parse(&a.name().to_uppercase().replace('-', "_")), Some(a));
            #[cfg(feature = "serde")]
            assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{}\"", a.name()));
        }
        assert_eq!(Algorithm::parse("rsa-2048"), None);
    }

    #[test]
    fn parameter_sets_are_numbered_within_each_key_type() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_parameter_set(a.is_kem(), a.parameter_set()), Some(a));
        }
        assert_eq!(Algorithm::from_parameter_set(false, 2), Some(Algorithm::MlDsa65));
        assert_eq!(Algorithm::from_parameter_set(true, 3), Some(Algorithm::MlKem1024));
        assert_eq!(Algorithm::from_parameter_set(true, 4), None);
        assert_eq!(Algorithm::from_parameter_set(false, 0), None);
    }
}
