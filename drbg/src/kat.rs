//! Known-answer tests of the DRBG against NIST CAVP vectors, run at start-up.
//!
//! The vectors are the `[AES-256 no df]` sections of CAVP's `CTR_DRBG.rsp`
//! (prediction resistance off, on, and no reseed), kept verbatim as files under
//! `drbg/cavp/` (see the README there) and compiled in.

use zeroize::Zeroizing;

use crate::{CtrDrbg, SEED_LEN};

const PR_FALSE: &str = include_str!("../cavp/CTR_DRBG_AES256_nodf_pr_false.rsp");
const PR_TRUE: &str = include_str!("../cavp/CTR_DRBG_AES256_nodf_pr_true.rsp");
const NO_RESEED: &str = include_str!("../cavp/CTR_DRBG_AES256_nodf_no_reseed.rsp");

/// A known-answer test did not give the known answer, or a vector file is
/// malformed. Either way the DRBG must not be used.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("CTR_DRBG known-answer test failed: {file} COUNT = {count}: {what}")]
pub struct KatError {
    file: &'static str,
    count: String,
    what: &'static str,
}

/// How reseeding is exercised by a vector file.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Reseed once after instantiation, then two generates with additional input.
    Reseed,
    /// Before each generate, reseed with fresh entropy and that call's
    /// additional input; generate with none.
    PredictionResistance,
    /// Two generates, no reseed.
    NoReseed,
}

/// Run every vector; returns how many passed (all, or an error).
pub fn run_all() -> Result<usize, KatError> {
    let mut n = 0;
    n += run_file("pr_false", PR_FALSE, Mode::Reseed)?;
    n += run_file("pr_true", PR_TRUE, Mode::PredictionResistance)?;
    n += run_file("no_reseed", NO_RESEED, Mode::NoReseed)?;
    Ok(n)
}

fn run_file(file: &'static str, text: &str, mode: Mode) -> Result<usize, KatError> {
    let mut passed = 0;
    for record in text.split("\nCOUNT = ").skip(1) {
        let mut lines = record.lines();
        let count = lines.next().unwrap_or_default().trim().to_owned();
        let err = |what| KatError { file, count: count.clone(), what };
        let fields: Vec<(&str, Zeroizing<Vec<u8>>)> = lines
            .take_while(|l| !l.trim().is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').ok_or_else(|| err("line without '='"))?;
                let bytes = hex::decode(v.trim()).map_err(|_| err("bad hex"))?;
                Ok((k.trim(), Zeroizing::new(bytes)))
            })
            .collect::<Result<_, KatError>>()?;
        let all = |name: &str| -> Vec<&[u8]> {
            fields.iter().filter(|(k, _)| *k == name).map(|(_, v)| v.as_slice()).collect()
        };
        let one = |name: &str| all(name).first().copied().ok_or_else(|| err("missing field"));
        let seed = |b: &[u8]| -> Result<[u8; SEED_LEN], KatError> {
            b.try_into().map_err(|_| err("entropy input is not seedlen"))
        };
        let expected = one("ReturnedBits")?;
        let mut drbg =
            CtrDrbg::new(&seed(one("EntropyInput")?)?, one("PersonalizationString")?, 1 << 20)
                .map_err(|_| err("instantiate failed"))?;
        let mut out = Zeroizing::new(vec![0u8; expected.len()]);
        let additional = all("AdditionalInput");
        if additional.len() != 2 {
            return Err(err("expected two AdditionalInput lines"));
        }
        match mode {
            Mode::Reseed => {
                drbg.reseed(&seed(one("EntropyInputReseed")?)?, one("AdditionalInputReseed")?)
                    .map_err(|_| err("reseed failed"))?;
                for a in additional {
                    drbg.generate(&mut out, a).map_err(|_| err("generate failed"))?;
                }
            }
            Mode::PredictionResistance => {
                let pr = all("EntropyInputPR");
                if pr.len() != 2 {
                    return Err(err("expected two EntropyInputPR lines"));
                }
                for (e, a) in pr.into_iter().zip(additional) {
                    drbg.reseed(&seed(e)?, a).map_err(|_| err("reseed failed"))?;
                    drbg.generate(&mut out, &[]).map_err(|_| err("generate failed"))?;
                }
            }
            Mode::NoReseed => {
                for a in additional {
                    drbg.generate(&mut out, a).map_err(|_| err("generate failed"))?;
                }
            }
        }
        if out.as_slice() != expected {
            return Err(err("output differs from ReturnedBits"));
        }
        passed += 1;
    }
    if passed == 0 {
        return Err(KatError { file, count: "-".into(), what: "no vectors found" });
    }
    Ok(passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_cavp_vectors_pass() {
        assert_eq!(run_all(), Ok(180));
    }

    #[test]
    fn a_wrong_answer_is_caught() {
        // Flip one hex digit of the first ReturnedBits: the KAT must say so.
        let at = PR_FALSE.find("ReturnedBits = ").unwrap() + "ReturnedBits = ".len();
        let mut bad = PR_FALSE.to_owned();
        let flipped = if &bad[at..=at] == "0" { "1" } else { "0" };
        bad.replace_range(at..=at, flipped);
        let e = run_file("pr_false", &bad, Mode::Reseed).unwrap_err();
        assert_eq!(e.count, "0");
        assert_eq!(e.what, "output differs from ReturnedBits");
        // And the PR vectors fail if run without prediction resistance.
        assert!(run_file("pr_true", PR_TRUE, Mode::NoReseed).is_err());
    }
}
