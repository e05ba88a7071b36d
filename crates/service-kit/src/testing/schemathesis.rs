//! Property-based tests of a running service through its own OpenAPI document, by
//! schemathesis (PyPI): it generates requests from the document (valid and invalid ones, and
//! sequences that follow the document's links, such as create → get → patch → complete →
//! delete) and checks every answer against it.
//!
//! The CLI is `$SCHEMATHESIS` when set (the Makefile sets it), else what
//! `scripts/ensure-schemathesis.sh` provides (installed once per machine). The run is seeded
//! (`SCHEMATHESIS_SEED`, default below) and single-worker, so a failure replays.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

/// The seed of every run unless `SCHEMATHESIS_SEED` says otherwise.
pub const DEFAULT_SEED: u64 = 20261201;
/// Generated cases per operation and phase (`--max-examples`).
pub const MAX_EXAMPLES: u32 = 100;
/// The fewest generated cases a run of one service must reach to count.
pub const MIN_CASES: u64 = 1_000;

/// Every check schemathesis has but `positive_data_acceptance`, which requires every
/// request the document allows to succeed: some values are valid only once the service issued
/// them (a `cursor`, an `Idempotency-Key` already used with another body, an `If-Match` of the
/// current version), which a document cannot express.
const EXCLUDED_CHECKS: &str = "positive_data_acceptance";

/// The CLI, found or installed once per test process.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| super::tool("SCHEMATHESIS", "scripts/ensure-schemathesis.sh", &[]))
}

/// What one run found.
#[derive(Debug)]
pub struct PropertyRun {
    /// Test cases generated (and sent), every phase included.
    pub cases: u64,
    pub passed: bool,
    pub output: String,
}

/// Runs every phase against the service at `base_url` (its document at
/// `{base_url}/openapi.json`), sending `headers` with every request. Panics, with
/// schemathesis's report, unless every case passed and at least [`MIN_CASES`] ran.
pub async fn check_service(name: &str, base_url: &str, headers: &[(&str, &str)]) -> PropertyRun {
    let seed = std::env::var("SCHEMATHESIS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SEED);
    let workdir = super::TempDir::new();
    let mut command = tokio::process::Command::new(binary());
    command
        .current_dir(&workdir.path)
        .args(["run", &format!("{base_url}/openapi.json")])
        .args(["--checks", "all", "--exclude-checks", EXCLUDED_CHECKS])
        .args(["--max-examples", &MAX_EXAMPLES.to_string(), "--seed", &seed.to_string()])
        .args(["--workers", "1", "--generation-database", "none", "--no-color"])
        .args(["--request-timeout", "30"]);
    for (name, value) in headers {
        command.args(["--header", &format!("{name}: {value}")]);
    }
    let output = command.stdin(Stdio::null()).output().await.unwrap_or_else(|e| panic!("schemathesis runs: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let run = PropertyRun { cases: generated_cases(&text), passed: output.status.success(), output: text };
    eprintln!("schemathesis on {name} (seed {seed}): {} cases generated, passed: {}", run.cases, run.passed);
    assert!(run.passed, "schemathesis found failures on {name} (seed {seed}):\n{}", run.output);
    assert!(
        run.cases >= MIN_CASES,
        "only {} cases ran on {name}; at least {MIN_CASES} were asked:\n{}",
        run.cases,
        run.output
    );
    run
}

/// `N generated` from the summary's "Test cases:" section.
fn generated_cases(output: &str) -> u64 {
    output
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("Test cases:"))
        .find_map(|line| line.trim().split_once(" generated").and_then(|(n, _)| n.trim().parse().ok()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_case_count_of_a_summary() {
        let summary = "Failures:\n  x\n\nTest cases:\n  1363 generated, 1363 passed, 2 skipped\n\nSeed: 1\n";
        assert_eq!(generated_cases(summary), 1363);
        assert_eq!(generated_cases("no summary"), 0);
    }
}
