#!/usr/bin/env bash
# Runs every test of the project: the workspace (all features, doc tests included) and the fuzz
# crate's replay of its seed corpus and saved crash inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-features
cargo test --manifest-path fuzz/Cargo.toml
