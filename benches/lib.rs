//! Criterion benchmarks for the workspace live in `benches/benches/`; this library holds what
//! several of them measure with.

#![forbid(unsafe_code)]

/// The process's resident set size in bytes (Linux: `/proc/self/statm`, 4 KiB pages).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("resident pages");
    pages * 4096
}
