//! SP 800-90B §5.2.4: the longest-repeated-substring test.

use super::IidLrs;
use crate::estimate::tuple::tuple_counts;

/// The LRS test on the literal symbols, with `p` their proportions.
pub(super) fn lrs_test(data: &[u8], p: &[f64]) -> IidLrs {
    let p_col: f64 = p.iter().map(|x| x * x).sum();
    let w = (tuple_counts(data).0.len() - 1) as u64;
    if p_col > 1.0 - f64::EPSILON / 2048.0 {
        return IidLrs { p_col: 1.0, w, pr: 1.0, passed: true };
    }
    let m = (data.len() as u64 - w + 1) as f64;
    let pairs = (m * m - m) / 2.0;
    let log_no = (-p_col.powi(w as i32)).ln_1p();
    let passed = 0.999f64.ln() >= pairs * log_no;
    IidLrs { p_col, w, pr: -(pairs * log_no).exp_m1(), passed }
}
