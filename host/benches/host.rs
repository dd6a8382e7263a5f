//! Placeholder until the host benchmarks land.
fn main() {}
