//! Benchmarks: criterion micro-benchmarks and the scale harness.
