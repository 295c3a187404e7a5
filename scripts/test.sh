#!/usr/bin/env bash
# Runs every test of the project: the workspace (all features, doc tests included) and the fuzz
# crate's replay of its seed corpus and saved crash inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-features
cargo test --manifest-path fuzz/Cargo.toml
# The workspace run above signs with libsecp256k1 (feature `libsecp256k1`, in --all-features);
# payment-channel's own suite again with the default pure-Rust backend (k256).
cargo test -p payment-channel --features test-utils
