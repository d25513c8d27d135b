# ebpf.fleet: one entry point for setup, build, tests, demo and benchmarks.
# Every target that needs tools depends on `setup`, which installs them on a
# fresh Debian 12 machine (as root) and does nothing when they are there.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT        := $(abspath .)
VENV        ?= $(ROOT)/.venv
SANITY_VENV ?= $(ROOT)/.venv-sanity
PY          := $(VENV)/bin/python
BUILD       := $(ROOT)/build
COLLECTIONS := $(BUILD)/collections
COLL_LINK   := $(COLLECTIONS)/ansible_collections/ebpf/fleet
SANITY_COPY := $(BUILD)/sanity/ansible_collections/ebpf/fleet
REPORTS     := $(BUILD)/reports
PYTEST      := $(PY) -m pytest -p no:cacheprovider --timeout=600
BPF_CFLAGS  := -O2 -g -target bpf -Wall -Werror -I$(ROOT)/bpf/include -I/usr/include/$(shell uname -m)-linux-gnu
BPF_SRCS    := $(wildcard bpf/*.c)
TEST_BPF    := $(wildcard tests/bpf/*.c)
BPF_OBJS    := $(patsubst bpf/%.c,$(BUILD)/bpf/%.o,$(BPF_SRCS)) $(patsubst tests/bpf/%.c,$(BUILD)/bpf/%.o,$(TEST_BPF))
ANSIBLE_ENV := ANSIBLE_COLLECTIONS_PATH=$(COLLECTIONS) PATH=$(VENV)/bin:$$PATH

.PHONY: help setup collection-link bpf sanity lint unit integration test demo lab lab-clean bench build-collection clean requirements

help:
	@echo "make demo    run the main job on the built-in network-namespace lab"
	@echo "make test    run every test (sanity, lint, unit, BPF build, real-kernel integration)"
	@echo "make lab     keep the lab up for exploring (make lab-clean removes it)"
	@echo "make bench   run the benchmarks, write build/bench/*.json and docs/performance.md"
	@echo "make setup   install what the others need (Debian packages, .venv)"

setup:
	@VENV=$(VENV) SANITY_VENV=$(SANITY_VENV) bash scripts/setup.sh

collection-link:
	@mkdir -p $(dir $(COLL_LINK))
	@ln -sfn $(ROOT) $(COLL_LINK)

$(BUILD)/bpf/%.o: bpf/%.c $(wildcard bpf/include/fleet/*.h)
	@mkdir -p $(dir $@)
	clang $(BPF_CFLAGS) -c $< -o $@

$(BUILD)/bpf/%.o: tests/bpf/%.c $(wildcard bpf/include/fleet/*.h) $(wildcard tests/bpf/*.h)
	@mkdir -p $(dir $@)
	clang $(BPF_CFLAGS) -c $< -o $@

# a fixture variant that includes another fixture's source
$(BUILD)/bpf/xdp_drop_udp_bigmap.o: tests/bpf/xdp_drop_udp.c

bpf: setup $(BPF_OBJS)

# ansible-test needs the collection under ansible_collections/<ns>/<name>; give it a clean copy.
sanity: setup
	@rm -rf $(SANITY_COPY) && mkdir -p $(SANITY_COPY)
	@rsync -a --exclude .git --exclude .venv --exclude .venv-sanity --exclude build --exclude '__pycache__' $(ROOT)/ $(SANITY_COPY)/
	@# its own git repo: ansible-test lists files with git, and build/ is ignored by ours
	@cd $(SANITY_COPY) && git init -q && git add -A
	@if [ -n "$$(cat tests/sanity/ignore-*.txt)" ]; then echo "sanity ignore files must stay empty"; exit 1; fi
	cd $(SANITY_COPY) && PATH=$(SANITY_VENV)/bin:$$PATH $(SANITY_VENV)/bin/ansible-test sanity --local --python 3.11 --color no

lint: setup collection-link
	$(ANSIBLE_ENV) $(VENV)/bin/ansible-lint --profile production --offline .

unit: setup collection-link bpf
	@mkdir -p $(REPORTS)
	$(PYTEST) -q tests/unit --junitxml=$(REPORTS)/unit.xml

integration: setup collection-link bpf
	@mkdir -p $(REPORTS)
	$(PYTEST) -q tests/integration --junitxml=$(REPORTS)/integration.xml

test: setup
	@rm -rf $(REPORTS)
	$(MAKE) --no-print-directory sanity
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory bpf
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory integration
	@echo "== summary of every pytest run =="
	@$(PY) scripts/summary.py $(REPORTS)/unit.xml $(REPORTS)/integration.xml

# The lab (scripts/lab.sh, docs/lab.md) is always torn down, pass or fail; run 2 must report changed=0.
DEMO_PLAY := $(ANSIBLE_ENV) $(VENV)/bin/ansible-playbook -i $(BUILD)/lab/inventory.ini playbooks/demo.yml -e demo_output_dir=$(BUILD)/demo
DEPLOY_PLAY := $(ANSIBLE_ENV) $(VENV)/bin/ansible-playbook -i $(BUILD)/lab/inventory.ini playbooks/deploy_xdp.yml
demo: setup collection-link bpf
	@start=$$(date +%s); rm -rf $(BUILD)/demo; mkdir -p $(BUILD)/demo; export EBFLAB_PYTHON=$(PY); \
	trap 'bash scripts/lab.sh down' EXIT; \
	bash scripts/lab.sh up; \
	echo "== demo run 1: deploy the filter, the load balancer and egress classes, send traffic, show the counters"; \
	$(DEMO_PLAY); \
	echo "== demo run 2: deploy_xdp.yml again; the deployment must change nothing"; \
	ANSIBLE_NOCOLOR=1 $(DEPLOY_PLAY) >$(BUILD)/demo/run2.log 2>&1 || { cat $(BUILD)/demo/run2.log; exit 1; }; \
	sed -n '/PLAY RECAP/,$$p' $(BUILD)/demo/run2.log; \
	if grep -qE 'changed=[1-9]' $(BUILD)/demo/run2.log; then echo "== FAILED: run 2 changed something"; exit 1; fi; \
	$(PY) scripts/demo_chart.py $(BUILD)/demo/demo_summary.json $(BUILD)/demo/demo.png; \
	echo "== demo passed in $$(( $$(date +%s) - start )) s (run 2: changed=0 on every host); tearing the lab down"

# A lab that stays up for exploring (docs/lab.md): its inventory is build/lab/inventory.ini.
lab: setup collection-link bpf
	@EBFLAB_PYTHON=$(PY) bash scripts/lab.sh up
	@echo "deploy: $(ANSIBLE_ENV) $(VENV)/bin/ansible-playbook -i $(BUILD)/lab/inventory.ini playbooks/deploy_xdp.yml"
	@echo "remove the lab: make lab-clean"

lab-clean:
	@bash scripts/lab.sh down

# Every tests/bench/bench_*.py writes build/bench/<name>.json; scripts/bench_report.py turns them into
# docs/performance.md and docs/performance/*.png. BENCH_QUICK=1: small sizes, few rounds, and the report goes to
# build/bench/performance.md (the committed report stays a full run's). BENCH_OUT: another results directory.
bench: setup collection-link bpf
	@start=$$(date +%s); out=$${BENCH_OUT:-$(BUILD)/bench}; report=$(ROOT)/docs/performance.md; \
	if [ -n "$${BENCH_QUICK:-}" ] && [ "$${BENCH_QUICK}" != 0 ]; then report=$$out/performance.md; fi; \
	rm -f $$out/*.json && mkdir -p $$out; failed=""; \
	for b in tests/bench/bench_*.py; do echo "== $$b"; BENCH_OUT=$$out $(PY) $$b || failed="$$failed $$b"; done; \
	$(PY) scripts/bench_report.py --in $$out --out $$report; \
	echo "== make bench took $$(( $$(date +%s) - start )) s"; \
	if [ -n "$$failed" ]; then echo "== FAILED:$$failed"; exit 1; fi

build-collection: setup
	@mkdir -p $(BUILD)/dist
	$(VENV)/bin/ansible-galaxy collection build --force --output-path $(BUILD)/dist $(ROOT)

requirements:
	rm -rf $(BUILD)/reqvenv && /usr/bin/python3 -m venv $(BUILD)/reqvenv
	$(BUILD)/reqvenv/bin/pip install -q -r requirements/controller.in
	{ echo "# Generated from controller.in with 'pip freeze' in a fresh venv (Debian 12, Python 3.11)."; \
	  echo "# Regenerate: make requirements"; \
	  $(BUILD)/reqvenv/bin/pip freeze | grep -v '^pip=='; } > requirements/controller.txt

clean:
	rm -rf $(BUILD)
