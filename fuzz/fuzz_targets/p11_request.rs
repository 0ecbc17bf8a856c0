//! The daemon's side of the module protocol: `Request::decode` on any payload.
//! A request that decodes encodes back to the same bytes (one encoding each).
#![no_main]

use qkeyd_p11_proto::Request;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Request::decode(data) {
        assert_eq!(&r.encode()[..], data, "{r:?} has a second encoding");
    }
});
