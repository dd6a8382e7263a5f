//! A short, bounded pass of the differential fuzzer (issue 17, item 5):
//! the check of `fuzz/src/lib.rs` (compiled in here as is) on a fixed
//! range of seeds. Each generated module runs plain and after
//! `share_memory` on the project's engine; every export's results and
//! traps, and the exported memories and globals, must agree. The long runs
//! use the `share_diff` runner of the `fuzz/` crate (README, "Fuzzing").

#[allow(unreachable_pub, dead_code, missing_docs)]
#[path = "../../../fuzz/src/lib.rs"]
mod diff;

use diff::{Outcome, check, engine, input};

/// Seeds per CI run (debug builds compile a module in milliseconds).
const SEEDS: u64 = 300;

#[test]
fn share_memory_keeps_semantics_on_generated_modules() {
    crate::common::init();
    let engine = engine();
    let (mut agreed, mut calls) = (0, 0);
    for seed in 0..SEEDS {
        let len = 256 + usize::try_from(seed.wrapping_mul(0x9e37_79b9) % 7937).unwrap();
        match check(&engine, &input(seed, len)) {
            Ok(Outcome::Agreed { calls: n }) => {
                agreed += 1;
                calls += n;
            }
            Ok(_) => {}
            Err((divergence, _wasm)) => panic!("seed {seed}: {divergence}"),
        }
    }
    // The generator really produces runnable modules with exports.
    assert!(agreed > SEEDS / 2, "only {agreed} of {SEEDS} modules ran");
    assert!(calls > SEEDS as usize / 2, "only {calls} export calls");
}
