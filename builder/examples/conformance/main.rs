//! Conformance runner: reads a folder laid out like `shared/conformance` (its README defines
//! every format), runs rbuild's own code on each case and prints `SET: N passed, M failed`
//! per set. Exits 1 unless every set passes completely.
//!
//! Usage: `cargo run -p rbuild-builder --example conformance -- ../shared/conformance [-v]`

mod dockerignore;
mod parser;
mod shell;

use std::path::{Path, PathBuf};

/// The outcome of one set: its name and the ids of the cases that failed, with why.
pub struct SetResult {
    /// e.g. `parser`, `shell/envVarTest`, `dockerignore/match.tsv`.
    pub name: String,
    /// Cases that passed.
    pub passed: usize,
    /// `(case id, what went wrong)` for each failure.
    pub failed: Vec<(String, String)>,
}

impl SetResult {
    /// An empty result for the set `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            passed: 0,
            failed: Vec::new(),
        }
    }

    /// Records one case.
    pub fn record(&mut self, id: impl Into<String>, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => self.passed += 1,
            Err(why) => self.failed.push((id.into(), why)),
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(root) = args.next().map(PathBuf::from) else {
        eprintln!("usage: conformance DIR [-v]");
        std::process::exit(2);
    };
    let verbose = args.any(|a| a == "-v");
    let results = run_all(&root);
    let mut ok = !results.is_empty();
    for set in &results {
        println!(
            "{}: {} passed, {} failed",
            set.name,
            set.passed,
            set.failed.len()
        );
        if !set.failed.is_empty() || set.passed == 0 {
            ok = false;
        }
        for (id, why) in set.failed.iter().take(if verbose { usize::MAX } else { 5 }) {
            println!("  FAIL {id}: {why}");
        }
    }
    std::process::exit(if ok { 0 } else { 1 });
}

fn run_all(root: &Path) -> Vec<SetResult> {
    let mut all = Vec::new();
    all.extend(parser::run(root));
    all.extend(shell::run(root));
    all.extend(dockerignore::run(root));
    all
}
