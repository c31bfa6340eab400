//! Criterion micro-benchmarks of Sluice's client-side hot paths live in `benches/`; run them
//! with `cargo bench -p sluice-benches`. This library is empty on purpose: the crate exists so
//! the workspace root (which has no package) need not own the benchmarks.
