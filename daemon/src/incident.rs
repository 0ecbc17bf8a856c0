//! Internal failures as a client sees them: a generic message and an incident
//! id. The log line that has the detail carries the same id, so an operator
//! can find it, while no path, backend message or state reaches the client.

use std::fmt;

/// The id of one logged internal failure.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) struct Incident(u64);

impl Incident {
    /// Log `error` (with its whole `source()` chain) at error level under a
    /// new incident id, in the context `what`, and return the id.
    pub(crate) fn log(what: &str, error: &(dyn std::error::Error + 'static)) -> Self {
        // An id, not a secret: the OS generator will do, and a failure of it
        // only makes ids less unique.
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        let id = Self(u64::from_be_bytes(b));
        tracing::error!(incident = %id, error = %Chain(error), "{what}");
        id
    }
}

impl fmt::Display for Incident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// An error and its causes, `: `-separated.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn ids_differ_and_the_chain_names_every_cause() {
        let e = Outer(std::io::Error::other("inner"));
        let (a, b) = (Incident::log("test", &e), Incident::log("test", &e));
        assert_ne!(a, b);
        assert_eq!(a.to_string().len(), 16);
        assert_eq!(Chain(&e).to_string(), "outer: inner");
    }
}
