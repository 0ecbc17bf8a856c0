//! `qkeyd assess FILE`: the SP 800-90B non-IID assessment of a sample file,
//! printed as NIST's `ea_non_iid -vv` prints it, or as its JSON (`--json`).

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, bail};
use qkeyd_health::estimate::{Estimates, NonIid, Symbols, non_iid, report};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::Config;

/// Files larger than this are refused rather than read into memory.
const MAX_FILE: u64 = 256 << 20;

/// Most samples `--source` records.
const MAX_RECORD: usize = 16 << 20;
/// How long a source may stay unavailable while recording.
const RECORD_PATIENCE: Duration = Duration::from_secs(10);

/// Read, assess and render. Returns the text to print.
pub fn run(
    file: &Path,
    bits: Option<u32>,
    as_json: bool,
    commandline: &str,
) -> anyhow::Result<String> {
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
    assess_bytes(&raw, &file.display().to_string(), bits, as_json, commandline)
}

/// Record `samples` raw samples from a configured source, then assess them.
/// The samples are the source's raw output: no health test filters them, as
/// SP 800-90B assesses the noise source itself.
pub fn run_source(
    config: &Config,
    name: &str,
    samples: usize,
    bits: Option<u32>,
    as_json: bool,
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
    let bits = bits.or(Some(sc.params.bits_per_sample));
    assess_bytes(&raw, &format!("source:{name}"), bits, as_json, commandline)
}

fn assess_bytes(
    raw: &[u8],
    name: &str,
    bits: Option<u32>,
    as_json: bool,
    commandline: &str,
) -> anyhow::Result<String> {
    let sym = Symbols::new(raw, bits).with_context(|| name.to_owned())?;
    let r = non_iid(&sym);
    let sha = hex::encode(Sha256::digest(raw));
    if as_json {
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
