#!/usr/bin/env bash
# Runs every benchmark (ours and the peers in the same run) and writes the tables to
# target/bench/. Usage: scripts/bench.sh [store|nbd|import|vm|declarative|all]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --no-services
cargo build --release -p platter-bench -p platter
mkdir -p target/bench
what=${1:-all}
if [ "$what" = store ] || [ "$what" = all ]; then
  target/release/platter-bench store --out target/bench/store.md
fi
if [ "$what" = nbd ] || [ "$what" = all ]; then
  target/release/platter-bench nbd --out target/bench/nbd.md
fi
if [ "$what" = import ] || [ "$what" = all ]; then
  target/release/platter-bench import --out target/bench/import.md
fi
if [ "$what" = vm ] || [ "$what" = all ]; then
  target/release/platter-bench vm --out target/bench/vm.md
fi
if [ "$what" = declarative ] || [ "$what" = all ]; then
  target/release/platter-bench declarative --out target/bench/declarative.md
fi
