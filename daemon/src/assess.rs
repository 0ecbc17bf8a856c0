//! `qkeyd assess FILE`: the SP 800-90B non-IID assessment of a sample file,
//! printed as NIST's `ea_non_iid -vv` prints it, or as its JSON (`--json`).

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, bail};
use qkeyd_health::estimate::{
    Estimates, NonIid, Symbols,
    iid::{self, Iid, NAMES},
    non_iid_with_progress, report,
};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::Config;

/// Files larger than this are refused rather than read into memory.
const MAX_FILE: u64 = 256 << 20;

/// Most samples `--source` records.
const MAX_RECORD: usize = 16 << 20;
/// How long a source may stay unavailable while recording.
const RECORD_PATIENCE: Duration = Duration::from_secs(10);

/// How to assess.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Options {
    /// Bits per sample; detected if `None`.
    pub(crate) bits: Option<u32>,
    /// The reference tool's JSON layout instead of text.
    pub(crate) json: bool,
    /// The IID track instead of the non-IID one.
    pub(crate) iid: bool,
}

/// Read, assess and render. Returns the text to print.
pub(crate) fn run(file: &Path, opts: Options, commandline: &str) -> anyhow::Result<String> {
    let meta =
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    if meta.len() > MAX_FILE {
        bail!(
            "{} has {} bytes; at most {MAX_FILE} samples are assessed",
            file.display(),
            meta.len()
        );
    }
    let raw = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    if raw.is_empty() {
        bail!("{} is empty: there are no samples to assess", file.display());
    }
    assess_bytes(&raw, &file.display().to_string(), opts, commandline)
}

/// Record `samples` raw samples from a configured source, then assess them.
/// The samples are the source's raw output: no health test filters them, as
/// SP 800-90B assesses the noise source itself.
pub(crate) fn run_source(
    config: &Config,
    name: &str,
    samples: usize,
    opts: Options,
    commandline: &str,
) -> anyhow::Result<String> {
    let Some(sc) = config.sources.iter().find(|s| s.name == name) else {
        let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
        bail!("no source named {name:?} in the config (configured: {})", names.join(", "));
    };
    if !(1..=MAX_RECORD).contains(&samples) {
        bail!("--samples must be 1..={MAX_RECORD}, got {samples}");
    }
    let mut source = crate::serve::build_source(sc)?;
    let mut raw = vec![0u8; samples];
    let mut at = 0;
    let mut waiting_since: Option<Instant> = None;
    while at < samples {
        match source.read(&mut raw[at..]) {
            Ok(n) => {
                at += n;
                waiting_since = None;
            }
            Err(e) if e.is_transient() => {
                let since = *waiting_since.get_or_insert_with(Instant::now);
                if since.elapsed() > RECORD_PATIENCE {
                    bail!("source {name:?} unavailable for {RECORD_PATIENCE:?}: {e}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => bail!("source {name:?}: {e}"),
        }
    }
    let opts = Options { bits: opts.bits.or(Some(sc.params.bits_per_sample)), ..opts };
    assess_bytes(&raw, &format!("source:{name}"), opts, commandline)
}

fn assess_bytes(
    raw: &[u8],
    name: &str,
    opts: Options,
    commandline: &str,
) -> anyhow::Result<String> {
    let sym = Symbols::new(raw, opts.bits).with_context(|| name.to_owned())?;
    let sha = hex::encode(Sha256::digest(raw));
    if opts.iid {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("seeding the shuffles: {e}"))?;
        let r = iid::iid_with_progress(&sym, seed, &mut progress());
        finish_progress();
        return Ok(if opts.json {
            serde_json::to_string_pretty(&iid_json(&r, name, &sha, commandline))? + "\n"
        } else {
            iid_text(&r, name, &sha)
        });
    }
    let r = non_iid_with_progress(&sym, &mut progress());
    finish_progress();
    if opts.json {
        let doc = to_json(&r, name, &sha, commandline);
        Ok(serde_json::to_string_pretty(&doc)? + "\n")
    } else {
        Ok(to_text(&r, name, &sha))
    }
}

fn to_text(r: &NonIid, name: &str, sha: &str) -> String {
    let mut out = format!("Opening file: '{name}' (SHA-256 hash {sha})\n");
    out += &format!(
        "Loaded {} samples of {} distinct {}-bit-wide symbols\n",
        r.samples, r.alphabet, r.word_size
    );
    if r.bitstring.is_some() {
        out += &format!("Number of Binary Symbols: {}\n", r.samples * r.word_size as usize);
    }
    if r.samples < 1_000_000 {
        out += "\n*** Warning: data contains less than 1000000 samples ***\n\n";
    }
    for (key, value) in report::lines(r) {
        out += &format!("{key} = {value}\n");
    }
    if r.bitstring.is_some() {
        out += &format!("H_bitstring = {}\n", report::Value::Real(r.h_bitstring));
        out += &format!(
            "H_bitstring Per Symbol = {}\n",
            report::Value::Real(r.h_bitstring * f64::from(r.word_size))
        );
    }
    out += &format!("H_original = {}\n", report::Value::Real(r.h_original));
    out += &format!("Assessed min entropy: {}\n", report::Value::Real(r.h_assessed));
    out
}

/// The reference tool's JSON layout: the same keys, test cases and order, so
/// that tooling written for `ea_non_iid -o` reads ours.
fn to_json(r: &NonIid, name: &str, sha: &str, commandline: &str) -> Value {
    let binary = r.bitstring.is_none();
    let lit = &r.literal;
    let bit = r.bitstring.as_ref();
    let case = |desc: &str, b: Option<f64>, o: Option<f64>| {
        let mut m = Map::new();
        if let Some(b) = b {
            m.insert("hBitstring".into(), json!(b));
        }
        if let Some(o) = o {
            m.insert("hOriginal".into(), json!(o));
        }
        m.insert("testCaseDesc".into(), json!(desc));
        m
    };
    let pick = |f: fn(&Estimates) -> Option<f64>| (bit.and_then(f), f(lit));
    let mut cases = Vec::new();
    let (b, o) = pick(|e| e.mcv.map(|x| x.h));
    let mut mcv = case("Most Common Value", b, o);
    if let Some(m) = lit.mcv {
        mcv.insert("mcvEstimateMode".into(), json!(m.mode as f64));
        mcv.insert("mcvEstimatePHat".into(), json!(m.p_hat));
        mcv.insert("mcvEstimatePU".into(), json!(m.p_u));
    }
    cases.push(mcv);
    let bits_only = |f: fn(&Estimates) -> Option<f64>| {
        if binary { (None, f(lit)) } else { (bit.and_then(f), None) }
    };
    let (b, o) = bits_only(|e| e.collision.map(|x| x.h));
    cases.push(case("Collision Test (for bit strings only)", b, o));
    let (b, o) = bits_only(|e| e.markov.map(|x| x.h));
    cases.push(case("Markov Test (for bit strings only)", b, o));
    let (b, o) = bits_only(|e| e.compression.map(|x| x.h));
    cases.push(case("Compression Test (for bit strings only)", b, o));
    let mut tuple = Map::new();
    if let Some(t) = bit.and_then(|e| e.t_tuple) {
        tuple.insert("binTTupleRes".into(), json!(t.h));
    }
    if let Some(t) = lit.t_tuple {
        tuple.insert("tTupleRes".into(), json!(t.h));
    }
    tuple.insert("testCaseDesc".into(), json!("T-Tuple Test"));
    cases.push(tuple);
    let mut lrs = Map::new();
    if let Some(t) = bit.and_then(|e| e.lrs) {
        lrs.insert("binLrsRes".into(), json!(t.h));
    }
    if let Some(t) = lit.lrs {
        lrs.insert("lrsRes".into(), json!(t.h));
    }
    lrs.insert("testCaseDesc".into(), json!("LRS Test"));
    cases.push(lrs);
    let (b, o) = pick(|e| e.multi_mcw.map(|x| x.h));
    cases.push(case("Multi Most Common in Window Test", b, o));
    let (b, o) = pick(|e| e.lag.map(|x| x.h));
    cases.push(case("Lag Prediction Test", b, o));
    let (b, o) = pick(|e| e.multi_mmc.map(|x| x.h));
    cases.push(case("Multi Markov Model with Counting Test (MultiMMC)", b, o));
    let (b, o) = pick(|e| e.lz78y.map(|x| x.h));
    cases.push(case("LZ78Y Test", b, o));
    let mut overall = case("Overall", (!binary).then_some(r.h_bitstring), Some(r.h_original));
    overall.insert("dataWordSize".into(), json!(f64::from(r.word_size)));
    overall.insert("hAssessed".into(), json!(r.h_assessed));
    cases.push(overall);
    json!({
        "IID": false,
        "commandline": commandline,
        "dateTimeStamp": timestamp(),
        "errorLevel": 0,
        "filename": name,
        "sha256": sha,
        "testCases": cases,
        "toolVersion": concat!("qkeyd ", env!("CARGO_PKG_VERSION")),
        "type": "",
    })
}

/// UTC `YYYYMMDDHHMMSS`, as the reference tool stamps its JSON.
fn timestamp() -> String {
    let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A one-line progress display on stderr, shown only on a terminal (long
/// runs take seconds to a minute); logs and pipes get nothing.
fn progress() -> impl FnMut(&str) {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let start = Instant::now();
    let mut shown: Option<Instant> = None;
    move |step: &str| {
        // At most ten updates a second: the IID track reports every round.
        if tty && shown.is_none_or(|t| t.elapsed() >= Duration::from_millis(100)) {
            shown = Some(Instant::now());
            eprint!("\r\x1b[2K[{:>5.1} s] {step}", start.elapsed().as_secs_f64());
        }
    }
}

fn finish_progress() {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprint!("\r\x1b[2K");
    }
}

fn real(x: f64) -> String {
    report::Value::Real(x).to_string()
}

fn iid_text(r: &Iid, name: &str, sha: &str) -> String {
    let mut o = format!("Opening file: '{name}' (SHA-256 hash {sha})\n");
    o += &format!(
        "Loaded {} samples of {} distinct {}-bit-wide symbols\n",
        r.samples, r.alphabet, r.word_size
    );
    if !r.binary {
        o += &format!("Number of Binary samples: {}\n", r.samples * r.word_size as usize);
    }
    if r.samples < 1_000_000 {
        o += "\n*** Warning: data contains less than 1000000 samples ***\n\n";
    }
    o += &format!(
        "Raw Mean = {}\nMedian = {}\nBinary = {}\n",
        real(r.raw_mean),
        real(r.median),
        r.binary
    );
    let mut mcv = |label: &str, m: &qkeyd_health::estimate::Mcv| {
        o += &format!("{label} Most Common Value Estimate: Mode count = {}\n", m.mode);
        o += &format!("{label} Most Common Value Estimate: p-hat = {}\n", real(m.p_hat));
        o += &format!("{label} Most Common Value Estimate: p_u = {}\n", real(m.p_u));
        o += &format!("{label} Most Common Value Estimate: min entropy = {}\n", real(m.h));
    };
    mcv("Literal", &r.mcv_literal);
    if let Some(b) = &r.mcv_bitstring {
        mcv("Bitstring", b);
    }
    if !r.binary {
        o += &format!("H_bitstring = {}\n", real(r.h_bitstring));
        o +=
            &format!("H_bitstring Per Symbol = {}\n", real(r.h_bitstring * f64::from(r.word_size)));
    }
    o += &format!(
        "H_original = {}\nAssessed min entropy: {}\n",
        real(r.h_original),
        real(r.h_assessed)
    );
    for (label, c) in
        [("Chi square independence", r.chi_independence), ("Chi square goodness of fit", r.chi_fit)]
    {
        o += &format!(
            "{label}: T = {}\n{label}: df = {}\n{label}: P-value = {}\n",
            real(c.t),
            c.df,
            real(c.p)
        );
    }
    let pass = |b: bool| if b { "Passed" } else { "Failed" };
    o +=
        &format!("Chi square tests: {}\n", pass(r.chi_independence.passed() && r.chi_fit.passed()));
    let l = "Literal Longest Repeated Substring results";
    o += &format!(
        "{l}: P_col = {}\n{l}: W = {}\n{l}: Pr(X >= 1) = {}\n",
        real(r.lrs.p_col),
        r.lrs.w,
        real(r.lrs.pr)
    );
    o += &format!("Length of longest repeated substring test: {}\n", pass(r.lrs.passed));
    let p = &r.permutation;
    for (n, v) in NAMES.iter().zip(p.unpermuted) {
        o += &format!("Permutation testing: Unpermuted result {n} = {}\n", real(v));
    }
    o += &format!(
        "\n\n{:>25}{:>9}{:>9}{:>9}\n{}\n",
        "statistic",
        "C[i][0]",
        "C[i][1]",
        "C[i][2]",
        "-".repeat(52)
    );
    for (j, n) in NAMES.iter().enumerate() {
        let c = p.counts[j];
        let label = if p.decided(j) { format!("{n:>25}") } else { format!("{n:>24}*") };
        o += &format!("{label}{:>8}{:>8}{:>8}\n", c[0], c[1], c[2]);
    }
    o += &format!("(* denotes failed test)\n\nIID permutation tests: {}\n", pass(p.passed()));
    o
}

/// The reference tool's IID JSON layout.
fn iid_json(r: &Iid, name: &str, sha: &str, commandline: &str) -> Value {
    let mut case = Map::new();
    if r.binary {
        case.insert("binary".into(), json!(true));
    }
    case.insert("hAssessed".into(), json!(r.h_assessed));
    case.insert("hBitstring".into(), json!(r.h_bitstring));
    case.insert("hOriginal".into(), json!(r.h_original));
    case.insert("mean".into(), json!(r.raw_mean));
    case.insert("median".into(), json!(r.median));
    case.insert(
        "passedChiSquareTests".into(),
        json!(r.chi_independence.passed() && r.chi_fit.passed()),
    );
    case.insert("passedIidPermutationTests".into(), json!(r.permutation.passed()));
    case.insert("passedLongestRepeatedSubstringTest".into(), json!(r.lrs.passed));
    let iterations: Vec<Value> = (0..3)
        .map(|i| {
            let mut m = Map::new();
            m.insert("iteration".into(), json!(i));
            for j in 0..NAMES.len() {
                m.insert(iid::json_key(j), json!(f64::from(r.permutation.counts[j][i])));
            }
            Value::Object(m)
        })
        .collect();
    case.insert("permutationTestResults".into(), json!(iterations));
    case.insert("testCaseDesc".into(), json!(""));
    json!({
        "IID": true,
        "commandline": commandline,
        "dateTimeStamp": timestamp(),
        "errorLevel": 0,
        "filename": name,
        "sha256": sha,
        "testCases": [case],
        "toolVersion": concat!("qkeyd ", env!("CARGO_PKG_VERSION")),
        "type": "",
    })
}
