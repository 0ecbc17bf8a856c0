use super::*;

fn drbg(interval: u64) -> CtrDrbg {
    CtrDrbg::new(&[7u8; SEED_LEN], b"qkeyd test", interval).unwrap()
}

#[test]
fn output_is_independent_of_chunking() {
    // One 4 KiB request equals the keystream of one request, however the caller
    // slices its buffer: the batching inside must not change the stream.
    let mut a = drbg(100);
    let mut b = drbg(100);
    let mut x = vec![0u8; 4096];
    let mut y = vec![0u8; 4096];
    a.generate(&mut x, &[]).unwrap();
    b.generate(&mut y[..], &[]).unwrap();
    assert_eq!(x, y);
    // Odd sizes end mid-block and still match a prefix.
    let mut c = drbg(100);
    let mut z = vec![0u8; 1000];
    c.generate(&mut z, &[]).unwrap();
    assert_eq!(z[..], x[..1000]);
}

#[test]
fn reseed_interval_is_enforced() {
    let mut d = drbg(2);
    let mut out = [0u8; 16];
    d.generate(&mut out, &[]).unwrap();
    d.generate(&mut out, &[]).unwrap();
    assert!(d.needs_reseed());
    assert_eq!(d.generate(&mut out, &[]), Err(DrbgError::ReseedRequired));
    d.reseed(&[9; SEED_LEN], &[]).unwrap();
    assert_eq!(d.reseed_counter(), 1);
    d.generate(&mut out, &[]).unwrap();
}

#[test]
fn limits_are_enforced() {
    let mut d = drbg(10);
    let mut big = vec![0u8; MAX_REQUEST + 1];
    assert_eq!(d.generate(&mut big, &[]), Err(DrbgError::RequestTooLarge(MAX_REQUEST + 1)));
    assert_eq!(d.generate(&mut big[..16], &[0; 49]), Err(DrbgError::InputTooLong(49)));
    assert!(CtrDrbg::new(&[0; SEED_LEN], &[0; 49], 1).is_err());
}

#[test]
fn debug_shows_no_state() {
    let d = drbg(10);
    let s = format!("{d:?}");
    assert!(s.starts_with("CtrDrbg"));
    assert!(!s.contains("key") && !s.contains(" v:"), "{s}");
}
