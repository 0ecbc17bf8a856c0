//! The reference tool's `-vv` lines, so output can be compared line by line.

use super::{Estimates, NonIid};

/// One printed value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// An exact count.
    Int(u64),
    /// A real estimate.
    Real(f64),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Int(i) => write!(f, "{i}"),
            // 17 significant digits, like the reference's %.17g.
            Self::Real(x) => write!(f, "{}", fmt_g17(*x)),
        }
    }
}

fn fmt_g17(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let exp = x.abs().log10().floor() as i32;
    if (-5..17).contains(&exp) {
        let decimals = (16 - exp).max(0) as usize;
        let s = format!("{x:.decimals$}");
        if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
    } else {
        format!("{x:.16e}")
    }
}

/// `(label, value)` pairs in the reference tool's order, e.g.
/// `("Literal Most Common Value Estimate: p-hat", Real(0.0659))`.
pub fn lines(r: &NonIid) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let sets: Vec<(&str, &Estimates)> = match &r.bitstring {
        Some(b) => vec![("Bitstring", b), ("Literal", &r.literal)],
        None => vec![("Literal", &r.literal)],
    };
    let mut push = |label: &str, test: &str, key: &str, v: Value| {
        out.push((format!("{label} {test} Estimate: {key}"), v));
    };
    use Value::{Int, Real};
    for (l, e) in &sets {
        if let Some(m) = e.mcv {
            push(l, "Most Common Value", "Mode count", Int(m.mode));
            push(l, "Most Common Value", "p-hat", Real(m.p_hat));
            push(l, "Most Common Value", "p_u", Real(m.p_u));
            push(l, "Most Common Value", "min entropy", Real(m.h));
        }
    }
    for (l, e) in &sets {
        if let Some(c) = e.collision {
            push(l, "Collision", "v", Int(c.v));
            push(l, "Collision", "Sum t_i", Int(c.sum_t));
            push(l, "Collision", "X-bar", Real(c.x_bar));
            push(l, "Collision", "sigma-hat", Real(c.sigma));
            push(l, "Collision", "X-bar'", Real(c.x_bar_prime));
            push(l, "Collision", "p", Real(c.p));
            push(l, "Collision", "min entropy", Real(c.h));
        }
    }
    for (l, e) in &sets {
        if let Some(m) = e.markov {
            push(l, "Markov", "P_0", Real(m.p0));
            push(l, "Markov", "P_1", Real(m.p1));
            for (name, v) in ["P_{0,0}", "P_{0,1}", "P_{1,0}", "P_{1,1}"].iter().zip(m.transitions)
            {
                push(l, "Markov", name, Real(v));
            }
            push(l, "Markov", "p-hat_max", Real(m.p_hat_max));
            push(l, "Markov", "min entropy", Real(m.h));
        }
    }
    for (l, e) in &sets {
        if let Some(c) = e.compression {
            push(l, "Compression", "X-bar", Real(c.x_bar));
            push(l, "Compression", "sigma-hat", Real(c.sigma));
            push(l, "Compression", "X-bar'", Real(c.x_bar_prime));
            push(l, "Compression", "p", Real(c.p));
            push(l, "Compression", "min entropy", Real(c.h));
        }
    }
    for (l, e) in &sets {
        if let Some(t) = e.t_tuple {
            push(l, "t-Tuple", "t", Int(t.t));
            push(l, "t-Tuple", "p-hat_max", Real(t.p_hat_max));
            push(l, "t-Tuple", "p_u", Real(t.p_u));
            push(l, "t-Tuple", "min entropy", Real(t.h));
        }
        if let Some(t) = e.lrs {
            push(l, "LRS", "u", Int(t.u));
            push(l, "LRS", "v", Int(t.v));
            push(l, "LRS", "p-hat", Real(t.p_hat));
            push(l, "LRS", "p_u", Real(t.p_u));
            push(l, "LRS", "min entropy", Real(t.h));
        }
    }
    let preds = |e: &Estimates| {
        [("MultiMCW", e.multi_mcw), ("Lag", e.lag), ("MultiMMC", e.multi_mmc), ("LZ78Y", e.lz78y)]
    };
    for i in 0..4 {
        for (l, e) in &sets {
            let (name, p) = preds(e)[i];
            if let Some(p) = p {
                let test = format!("{name} Prediction");
                push(l, &test, "C", Int(p.c));
                push(l, &test, "r", Int(p.r));
                push(l, &test, "N", Int(p.n));
                push(l, &test, "P_global", Real(p.p_global));
                push(l, &test, "P_global'", Real(p.p_global_prime));
                if let Some(pl) = p.p_local {
                    push(l, &test, "P_local", Real(pl));
                }
                push(l, &test, "min entropy", Real(p.h));
            }
        }
    }
    out
}
