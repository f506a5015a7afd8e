#!/usr/bin/env bash
# The whole test suite: installs what is missing, then format, lints and every test tier.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export CARGO_TERM_COLOR=never
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace --no-fail-fast 2>&1 | tee target/test.log
