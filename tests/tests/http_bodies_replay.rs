//! The `http_bodies` fuzz target's inputs in the normal test build: every
//! seed of `fuzz/corpus/http_bodies/` and every reproducer of
//! `fuzz/regressions/http_bodies/` goes through the target's own check
//! (`fuzz/fuzz_targets/http_bodies/check.rs`: never a 5xx, every 4xx the
//! documented error shape with its documented status). Coverage-guided
//! fuzzing of it needs the instrumented server, an 11–13 min cold build,
//! so it runs by hand (`bash fuzz/run.sh`); this keeps every input it was
//! seeded with or found passing on every CI run.

#[allow(dead_code)]
#[path = "../../fuzz/fuzz_targets/http_bodies/check.rs"]
mod check;

use std::path::PathBuf;

/// The files of `fuzz/<kind>/http_bodies/`, sorted.
fn inputs(kind: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz").join(kind).join("http_bodies");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

#[test]
fn every_seed_and_reproducer_of_the_http_bodies_target_passes_its_check() {
    let seeds = inputs("corpus");
    assert!(seeds.len() >= 20, "the seed corpus is there: {} files", seeds.len());
    let reproducers = inputs("regressions");
    for path in seeds.iter().chain(&reproducers) {
        let data = std::fs::read(path).expect("read an input");
        let outcome = std::panic::catch_unwind(|| check::check(&data));
        assert!(outcome.is_ok(), "{} fails the http_bodies check", path.display());
    }
    println!("{} seeds and {} reproducers passed", seeds.len(), reproducers.len());
}
