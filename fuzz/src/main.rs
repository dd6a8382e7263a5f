//! `share_diff`: a bounded, seeded run of the differential check (see the
//! library), on stable Rust. Input `i` is a SplitMix64 stream seeded with
//! `start + i`, so any finding is replayed by its seed alone.
//!
//! ```text
//! share_diff [--start SEED] [--count N] [--seconds S] [--artifacts DIR]
//! ```
//!
//! Stops after `N` inputs or `S` seconds, whichever comes first; prints the
//! executions, the time and the findings; exits 1 if there was any finding
//! (each one's module is written to `DIR/seed-<seed>.wasm`).

use std::time::{Duration, Instant};

use shmgate_fuzz::{Outcome, check, engine, input};

fn main() {
    let mut start: u64 = 0;
    let mut count: u64 = u64::MAX;
    let mut seconds: Option<u64> = None;
    let mut artifacts = String::from("artifacts");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage(&flag));
        match flag.as_str() {
            "--start" => start = value.parse().unwrap_or_else(|_| usage(&flag)),
            "--count" => count = value.parse().unwrap_or_else(|_| usage(&flag)),
            "--seconds" => seconds = Some(value.parse().unwrap_or_else(|_| usage(&flag))),
            "--artifacts" => artifacts = value,
            _ => usage(&flag),
        }
    }
    if count == u64::MAX && seconds.is_none() {
        usage("--count or --seconds");
    }
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let engine = engine();
    let began = Instant::now();
    let (mut runs, mut modules, mut refused, mut calls, mut finds) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut stack_limited = 0u64;
    let mut seed = start;
    while runs < count && deadline.is_none_or(|d| Instant::now() < d) {
        // 256 bytes to 8 KiB of input: small and large modules alike.
        let len = 256 + usize::try_from(seed.wrapping_mul(0x9e37_79b9) % 7937).unwrap_or(0);
        match check(&engine, &input(seed, len)) {
            Ok(Outcome::NoModule) => {}
            Ok(Outcome::Refused) => {
                modules += 1;
                refused += 1;
            }
            Ok(Outcome::StackLimit) => {
                modules += 1;
                stack_limited += 1;
            }
            Ok(Outcome::Agreed { calls: n }) => {
                modules += 1;
                calls += n as u64;
            }
            Err((divergence, wasm)) => {
                modules += 1;
                finds += 1;
                let _ = std::fs::create_dir_all(&artifacts);
                let path = format!("{artifacts}/seed-{seed}.wasm");
                let _ = std::fs::write(&path, &wasm);
                eprintln!("FINDING seed {seed} ({path}): {divergence}");
            }
        }
        runs += 1;
        seed += 1;
        if runs.is_multiple_of(10_000) {
            eprintln!(
                "share_diff: {runs} executions, {modules} modules, {calls} calls, {finds} findings, {:.0} s",
                began.elapsed().as_secs_f64()
            );
        }
    }
    let secs = began.elapsed().as_secs_f64();
    println!(
        "share_diff: seeds {start}..{seed}: {runs} executions ({modules} modules, {refused} refused by the engine, \
         {calls} export calls, each run plain and shared; {stack_limited} compared up to a stack overflow) \
         in {secs:.1} s ({:.0}/s); {finds} findings",
        runs as f64 / secs.max(1e-9)
    );
    if finds > 0 {
        std::process::exit(1);
    }
}

fn usage(what: &str) -> ! {
    eprintln!(
        "share_diff: bad {what}\nusage: share_diff [--start SEED] [--count N] [--seconds S] [--artifacts DIR]"
    );
    std::process::exit(2)
}
