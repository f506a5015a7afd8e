# Targets named in the README. Each installs what it needs through scripts/install.sh.
.PHONY: demo test bench install build

install:
	bash scripts/install.sh

build:
	cargo build --release -p platter

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

bench:
	bash scripts/bench.sh
