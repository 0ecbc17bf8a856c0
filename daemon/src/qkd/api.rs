//! The messages of ETSI GS QKD 014 v1.1.1, with its field names. Unknown
//! fields are accepted (014's extension fields are free-form JSON); the
//! fields 014 requires must be present.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GET /api/v1/keys/{slave_SAE_ID}/status`: the link as the KME sees it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub(crate) struct Status {
    /// This end's KME.
    #[serde(rename = "source_KME_ID")]
    pub(crate) source_kme_id: String,
    /// The other end's KME.
    #[serde(rename = "target_KME_ID")]
    pub(crate) target_kme_id: String,
    /// The caller's SAE id.
    #[serde(rename = "master_SAE_ID")]
    pub(crate) master_sae_id: String,
    /// The SAE at the other end.
    #[serde(rename = "slave_SAE_ID")]
    pub(crate) slave_sae_id: String,
    /// Default key size, bits.
    pub(crate) key_size: u32,
    /// Keys the KME holds for this link now.
    pub(crate) stored_key_count: u64,
    /// Keys it can hold.
    pub(crate) max_key_count: u64,
    /// Keys one request may ask for.
    pub(crate) max_key_per_request: u32,
    /// Largest key size, bits.
    pub(crate) max_key_size: u32,
    /// Smallest key size, bits.
    pub(crate) min_key_size: u32,
    /// Additional slave SAEs one request may name (0: none).
    #[serde(rename = "max_SAE_ID_count")]
    pub(crate) max_sae_id_count: u32,
    /// Vendor extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) status_extension: Option<Value>,
}

/// The body of a `POST …/enc_keys`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub(crate) struct KeyRequest {
    /// Keys wanted (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) number: Option<u32>,
    /// Bits per key (default: the KME's `key_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) size: Option<u32>,
    /// Further slave SAEs to share the keys with.
    #[serde(rename = "additional_slave_SAE_IDs", default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) additional_slave_sae_ids: Vec<String>,
    /// Extensions the KME must honour or refuse the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) extension_mandatory: Option<Value>,
    /// Extensions the KME may ignore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) extension_optional: Option<Value>,
}

/// One key as a KME delivers it. The key is base64 text, wiped when the
/// value is dropped; `Debug` shows only the id.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
pub(crate) struct Key {
    /// The key id (a UUID).
    #[serde(rename = "key_ID")]
    pub(crate) key_id: String,
    /// Vendor extension.
    #[serde(rename = "key_ID_extension", default, skip_serializing_if = "Option::is_none")]
    pub(crate) key_id_extension: Option<Value>,
    /// The key, base64.
    pub(crate) key: String,
    /// Vendor extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key_extension: Option<Value>,
}

impl Drop for Key {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// The answer of `enc_keys` and `dec_keys`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub(crate) struct KeyContainer {
    /// The keys.
    pub(crate) keys: Vec<Key>,
    /// Vendor extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key_container_extension: Option<Value>,
}

/// An error answer: `{message, details}`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub(crate) struct ErrorAnswer {
    /// What went wrong.
    pub(crate) message: String,
    /// More, free-form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) details: Vec<Value>,
}

/// One entry of a `dec_keys` request.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub(crate) struct KeyIdEntry {
    /// The key id.
    #[serde(rename = "key_ID")]
    pub(crate) key_id: String,
    /// Vendor extension.
    #[serde(rename = "key_ID_extension", default, skip_serializing_if = "Option::is_none")]
    pub(crate) key_id_extension: Option<Value>,
}

/// The body of a `POST …/dec_keys`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub(crate) struct KeyIds {
    /// The keys wanted.
    #[serde(rename = "key_IDs")]
    pub(crate) key_ids: Vec<KeyIdEntry>,
    /// Vendor extension.
    #[serde(rename = "key_IDs_extension", default, skip_serializing_if = "Option::is_none")]
    pub(crate) key_ids_extension: Option<Value>,
}
