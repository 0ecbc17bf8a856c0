//! `src/lib.rs`, the fuzzing hooks' library (empty unless built with
//! `--cfg fuzzing`), compiles the binary's module tree once more: it must
//! declare the same modules as `src/main.rs`, or only the fuzz build breaks.

/// The names of the `mod NAME;` lines of a crate root.
fn modules(root: &str) -> Vec<&str> {
    let mut names: Vec<&str> =
        root.lines().filter_map(|l| l.trim().strip_prefix("mod ")?.strip_suffix(';')).collect();
    names.sort_unstable();
    names
}

#[test]
fn the_fuzzing_library_declares_the_binarys_modules() {
    let main = modules(include_str!("../src/main.rs"));
    let lib = modules(include_str!("../src/lib.rs"));
    assert!(main.contains(&"config") && main.contains(&"testing"), "{main:?}");
    assert_eq!(lib, main, "src/lib.rs must declare the modules src/main.rs declares");
}
