//! Names the configuration once used, and what they became. A file that still
//! uses one is refused with the new name, rather than with serde's bare
//! "unknown field".

use super::ConfigError;

/// (old dotted path, new dotted path, what else changed).
const RENAMED: &[(&str, &str, &str)] = &[
    ("pkcs11", "[module]", "the socket served to libqkeyd_pkcs11.so"),
    ("keys.pkcs11", "[keys.hsm]", "and keys.sealer = \"pkcs11\" is now \"hsm\""),
];

/// Refuse `table` if it uses an old name, saying what it is called now.
pub(super) fn refuse_old_names(table: &toml::Table) -> Result<(), ConfigError> {
    for (old, new, note) in RENAMED {
        if lookup(table, old).is_some() {
            return Err(ConfigError::Renamed { old: format!("[{old}]"), new, note });
        }
    }
    if let Some(toml::Value::String(s)) = lookup(table, "keys.sealer")
        && s == "pkcs11"
    {
        return Err(ConfigError::Renamed {
            old: "keys.sealer = \"pkcs11\"".to_owned(),
            new: "\"hsm\"",
            note: "its table is [keys.hsm]",
        });
    }
    Ok(())
}

fn lookup<'a>(table: &'a toml::Table, dotted: &str) -> Option<&'a toml::Value> {
    let mut parts = dotted.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn old_names_are_refused_with_the_new_ones() {
        let os = "[[source]]\nname=\"o\"\nkind=\"os\"\n";
        for (old, new) in [
            ("[pkcs11]\nsocket=\"@x\"", "[module]"),
            ("[keys.pkcs11]\nmodule=\"/m.so\"\ntoken_label=\"t\"\npin_env=\"P\"", "[keys.hsm]"),
            ("[keys]\nsealer=\"pkcs11\"", "\"hsm\""),
        ] {
            let e = Config::from_toml(&format!("{os}{old}")).unwrap_err().to_string();
            assert!(e.contains("renamed") && e.contains(new), "{old:?}: {e}");
        }
    }
}
