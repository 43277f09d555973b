# voicefleet — `make demo` shows a fleet reconciled on local components; `make test` runs the whole suite.
SHELL := /bin/bash
PY_VERSION ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: all venv system-deps bins page images crds charts-sync docs crds-check lint typecheck test unit demo run testground-up testground-down \
	bench-reconcile bench-scale bench-autoscale bench-voice bench-failover bench-phone bench-cold clean

all: test

# The venv is rebuilt when pyproject.toml changes.
$(VENV)/.stamp: pyproject.toml
	test -x $(PY) || $(PY_VERSION) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check pip==25.3
	$(PY) -m pip install -q --disable-pip-version-check -e '.[operator,agent,offline,dev]'
	touch $@

venv: $(VENV)/.stamp

system-deps:
	bash hack/system-deps.sh

# Pinned control plane, kwok, livekit-server, helm and kubectl, cached by version in ~/.cache/voicefleet.
bins: venv
	bash e2e/testground/build.sh

# The browser channel's talk page: livekit-client bundled with esbuild (both pinned in web/package-lock.json) into
# one file served by the token service; rebuilt when its sources or the lock file change, never committed.
PAGE := agent/voicefleet_browser/static/talk.js
web/node_modules/.stamp: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

$(PAGE): web/node_modules/.stamp web/talk.js
	web/node_modules/.bin/esbuild web/talk.js --bundle --minify --format=esm --target=es2020 --log-level=warning \
		--outfile=$@

page: $(PAGE)

# localhost/voicefleet-{operator,agent,offline}:<content hash> and :dev with podman, no registry; rebuilt only when
# what goes into an image changed. BASE=python:3.11.7-slim-bookworm for the official base (default: a local
# mmdebstrap Debian base, cached).
images: venv system-deps page
	$(PY) -m testground.images $(if $(BASE),--base $(BASE)) build

crds: venv
	$(PY) -m voicefleet_operator.crdgen crds
	$(PY) hack/charts_sync.py
	$(PY) hack/docgen.py

# Copies in charts/ (CRDs, Argo CD health checks, dashboard) and docs/reference.md, generated from the sources.
charts-sync: venv
	$(PY) hack/charts_sync.py

docs: venv
	$(PY) hack/docgen.py

crds-check: venv
	$(PY) -m voicefleet_operator.crdgen --check crds
	$(PY) hack/charts_sync.py --check
	$(PY) hack/docgen.py --check

lint: venv
	$(VENV)/bin/ruff check operator agent e2e tests hack
	$(VENV)/bin/ruff format --check operator agent e2e tests hack

typecheck: venv
	$(VENV)/bin/mypy -p voicefleet_operator -p voicefleet_agent -p voicefleet_tasks -p voicefleet_offline -p testground -p voiceroom -p failover -p phonecall -p voicefleet_browser

unit: venv
	$(PY) -m pytest tests/unit $(ARGS)

test: venv system-deps bins page images crds-check lint typecheck
	$(PY) -m pytest $(ARGS)

demo: venv system-deps bins
	$(PY) -m testground.demo

# The operator outside the cluster, against your current kubeconfig. Agent pods long-poll its fleet channel, so they
# must reach this host: FLEET_URL is the channel's address as the pods see it (rendered into every agent pod),
# FLEET_LISTEN where it listens (default 0.0.0.0:8090). On the test ground's real node (make testground-up
# ARGS=--real-node) pods reach this host at the bridge address 10.247.0.1:
#   make run FLEET_LISTEN=10.247.0.1:8090 FLEET_URL=http://10.247.0.1:8090
# Without FLEET_URL (nor VOICEFLEET_FLEET_URL) pods do not follow provider changes, and every VoiceAgent that follows
# a ProviderPolicy says so: FleetConnected=False, reason NoFleetURL; a URL the pods cannot reach shows as
# FleetConnected=False, reason PodsNotPolling, after the grace period (docs/install.md#fleet-channel).
run: venv
	$(PY) -m voicefleet_operator --log-format plain $(if $(FLEET_LISTEN),--fleet-listen $(FLEET_LISTEN)) \
		$(if $(FLEET_URL),--fleet-url $(FLEET_URL))

# ARGS=--real-node adds a real kubelet node (one per machine; see e2e/testground/README.md)
testground-up: venv system-deps bins
	$(PY) -m testground up $(ARGS)

testground-down: venv
	$(PY) -m testground down

# Benchmarks print a table and write bench-results/*.json; they are not tests.
bench-reconcile: venv system-deps bins
	$(PY) -m testground.bench_reconcile $(ARGS)

bench-scale: venv system-deps bins
	$(PY) -m testground.bench_scale $(ARGS)

# Live calls on the real node through the metrics loop: scale-out, scale-in and a rollout, calls dropped (needs root).
bench-autoscale: venv system-deps bins
	$(PY) -m testground.bench_autoscale $(ARGS)

bench-voice: venv system-deps bins
	$(PY) -m voiceroom.bench_voice $(ARGS)

bench-failover: venv system-deps bins
	$(PY) -m failover.bench $(ARGS)

# Sequential phone calls (pjsua2 → livekit-sip → agent worker) and the refusal cases; needs root (netns, veth).
bench-phone: venv system-deps bins
	$(PY) -m phonecall.bench $(ARGS)

# `make test` as a fresh machine runs it: a clean clone of HEAD with pip, npm, Go, voicefleet and podman caches all
# empty (redirected to a scratch directory; the machine's own caches are untouched). ARGS=--setup-only times the
# setup phases alone. Run it alone: it is CPU-bound builds.
bench-cold:
	python3 hack/bench_cold.py $(ARGS)

clean:
	rm -rf $(VENV) .testground .pytest_cache .mypy_cache .ruff_cache
