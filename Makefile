# Targets named in the README. Each installs what it needs through scripts/install.sh.
.PHONY: demo test bench install build cli-docs man

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

# docs/cli.md from the command definitions (a test fails when it is stale).
cli-docs:
	PLATTER_BLESS=1 cargo test -p platter --bin platter reference::tests::docs_cli_md_is_current

# Man pages into target/man/ (man -l target/man/platter.1).
man: build
	target/release/platter man target/man
