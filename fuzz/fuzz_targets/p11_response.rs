//! The module's side of the protocol: `Response::decode` on any payload. A
//! response that decodes encodes to bytes that decode to it again, and to the
//! same bytes unless it is an error with a code this version does not know.
#![no_main]

use qkeyd_p11_proto::Response;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Response::decode(data) {
        let again = r.encode();
        assert_eq!(Response::decode(&again).as_ref(), Ok(&r));
        let unknown_code =
            data.first() == Some(&10) && data.get(1).is_some_and(|c| !(1..=8).contains(c));
        if !unknown_code {
            assert_eq!(&again[..], data, "{r:?} has a second encoding");
        }
    }
});
