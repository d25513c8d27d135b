# ebpf.fleet: one entry point for setup, build, tests, demo and benchmarks.
# Every target that needs tools depends on `setup`, which installs them on a
# fresh Debian 12 machine (as root) and does nothing when they are there.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT        := $(abspath .)
VENV        ?= $(ROOT)/.venv
SANITY_VENV ?= $(ROOT)/.venv-sanity
IMPORTER_VENV ?= $(ROOT)/.venv-importer
PY          := $(VENV)/bin/python
BUILD       := $(ROOT)/build
COLLECTIONS := $(BUILD)/collections
COLL_LINK   := $(COLLECTIONS)/ansible_collections/ebpf/fleet
SANITY_COPY := $(BUILD)/sanity/ansible_collections/ebpf/fleet
REPORTS     := $(BUILD)/reports
PYTEST      := $(PY) -m pytest -p no:cacheprovider --timeout=600
# integration test files run side by side in this many processes (most of their time is spent waiting)
TEST_WORKERS ?= 3
BPF_CFLAGS  := -O2 -g -target bpf -Wall -Werror -I$(ROOT)/bpf/include -I/usr/include/$(shell uname -m)-linux-gnu
BPF_SRCS    := $(wildcard bpf/*.c)
TEST_BPF    := $(wildcard tests/bpf/*.c)
# the C that .clang-format covers (make style checks it, make format rewrites it)
C_STYLE     := $(BPF_SRCS) $(wildcard bpf/include/fleet/*.h) $(TEST_BPF) $(wildcard tests/bpf/*.h tests/bpf/bcc/*.c)
BPF_OBJS    := $(patsubst bpf/%.c,$(BUILD)/bpf/%.o,$(BPF_SRCS)) $(patsubst tests/bpf/%.c,$(BUILD)/bpf/%.o,$(TEST_BPF))
ANSIBLE_ENV := ANSIBLE_COLLECTIONS_PATH=$(COLLECTIONS) PATH=$(VENV)/bin:$$PATH

.PHONY: help setup collection-link bpf sanity lint style format unit integration test demo lab lab-clean bench build-collection clean requirements
.PHONY: docs docs-check changelog galaxy-check molecule vm-image vm

help:
	@echo "make demo    run the main job on the built-in network-namespace lab"
	@echo "make test    run every test (style, sanity, lint, unit, BPF build, real-kernel integration, molecule in VMs)"
	@echo "make lab     keep the lab up for exploring (make lab-clean removes it)"
	@echo "make bench   run the benchmarks, write build/bench/*.json and docs/performance.md"
	@echo "make docs    generate the reference (docs/reference/rst) from the code and build the site in build/docs"
	@echo "make changelog  what CHANGELOG.md would say if the fragments were released now (build/changelog)"
	@echo "make setup   install what the others need (Debian packages, .venv)"
	@echo "make format  rewrite the Python (ruff) and the C (clang-format) in the project's style"
	@echo "make molecule  the molecule scenarios (default: one VM; fleet: a load balancer and two backends) in qemu VMs (docs/molecule.md)"

setup:
	@VENV=$(VENV) SANITY_VENV=$(SANITY_VENV) IMPORTER_VENV=$(IMPORTER_VENV) bash scripts/setup.sh

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
	@rsync -a --exclude .git --exclude .venv --exclude .venv-sanity --exclude .venv-importer --exclude build --exclude '__pycache__' $(ROOT)/ $(SANITY_COPY)/
	@# its own git repo: ansible-test lists files with git, and build/ is ignored by ours
	@cd $(SANITY_COPY) && git init -q && git add -A
	@if [ -n "$$(cat tests/sanity/ignore-*.txt)" ]; then echo "sanity ignore files must stay empty"; exit 1; fi
	cd $(SANITY_COPY) && PATH=$(SANITY_VENV)/bin:$$PATH $(SANITY_VENV)/bin/ansible-test sanity --local --python 3.11 --color no

lint: setup collection-link
	$(ANSIBLE_ENV) $(VENV)/bin/ansible-lint --profile production --offline .

# ruff (ruff.toml) for the Python, clang-format (.clang-format) for bpf/ and tests/bpf/; make format fixes both.
style: setup
	$(VENV)/bin/ruff check --no-cache .
	$(VENV)/bin/ruff format --no-cache --check .
	clang-format --dry-run -Werror $(C_STYLE)

format: setup
	$(VENV)/bin/ruff check --no-cache --fix .
	$(VENV)/bin/ruff format --no-cache .
	clang-format -i $(C_STYLE)

unit: setup collection-link bpf
	@mkdir -p $(REPORTS)
	$(PYTEST) -q tests/unit --junitxml=$(REPORTS)/unit.xml

integration: setup collection-link bpf
	@mkdir -p $(REPORTS)
	$(PYTEST) -q -n $(TEST_WORKERS) --dist loadfile --durations=30 tests/integration --junitxml=$(REPORTS)/integration.xml

test: setup
	@rm -rf $(REPORTS)
	$(MAKE) --no-print-directory style
	$(MAKE) --no-print-directory sanity
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory docs-check
	$(MAKE) --no-print-directory galaxy-check
	$(MAKE) --no-print-directory bpf
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory integration
	$(MAKE) --no-print-directory vm
	@echo "== summary of every pytest run =="
	@$(PY) scripts/summary.py $(REPORTS)/unit.xml $(REPORTS)/integration.xml $(REPORTS)/vm.xml

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

# The molecule scenarios (extensions/molecule/{default,fleet}, docs/molecule.md): the Debian 12 VM image first
# (scripts/vm_image.sh, cached in /var/cache/ebpf-fleet-vm/<recipe hash>/), then `molecule test -s <scenario>` from
# extensions/ for each of MOLECULE_SCENARIOS, one after the other, with the collection from build/collections; each
# scenario's output also goes to build/molecule/<scenario>.log. make test runs them through tests/vm (pytest, one
# test per scenario, VM_WORKERS at a time: 1, as two scenarios side by side are no faster on 2 cores) after the
# integration tests.
MOLECULE_SCENARIOS ?= default fleet
VM_WORKERS ?= 1
vm-image: setup
	@start=$$(date +%s); bash scripts/vm_image.sh >/dev/null; echo "== VM image ready in $$(( $$(date +%s) - start )) s"

molecule: setup collection-link bpf vm-image
	@mkdir -p $(BUILD)/molecule; rc=0; for s in $(MOLECULE_SCENARIOS); do \
	  start=$$(date +%s); \
	  (cd extensions && PATH=$(VENV)/bin:$$PATH ANSIBLE_NOCOLOR=1 NO_COLOR=1 ANSIBLE_FORCE_COLOR=0 \
	    $(VENV)/bin/molecule test -s $$s 2>&1 | tee $(BUILD)/molecule/$$s.log; exit $${PIPESTATUS[0]}) || rc=1; \
	  echo "== molecule test -s $$s took $$(( $$(date +%s) - start )) s (log: $(BUILD)/molecule/$$s.log)"; \
	done; exit $$rc

vm: setup collection-link bpf vm-image
	@mkdir -p $(REPORTS) $(BUILD)/molecule; rm -f $(BUILD)/molecule/*.steps.json; rc=0; \
	$(PYTEST) -q -n $(VM_WORKERS) tests/vm --junitxml=$(REPORTS)/vm.xml || rc=$$?; \
	for f in $(BUILD)/molecule/*.steps.json; do [ -f "$$f" ] || continue; $(PY) -c 'import json, sys; \
	  print("== molecule %s (s): %s" % (sys.argv[1].split("/")[-1].split(".")[0], ", ".join("%s %s" % (k, "+".join(str(r["seconds"]) for r in v)) \
	  for k, v in json.load(open(sys.argv[1])).items())))' "$$f"; done; exit $$rc

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

# --- Reference docs, changelog, Galaxy ------------------------------------------------------------------------------
# The reference (docs/reference/README.md) is what antsibull-docs makes of the code's DOCUMENTATION, EXAMPLES and
# RETURN and of the roles' meta/argument_specs.yml: one RST page per module, plugin and role in docs/reference/rst/,
# committed, in the Sphinx site that `antsibull-docs sphinx-init` laid out (docs/reference/conf.py). `make docs`
# regenerates the pages and builds the site offline into build/docs/html; `make docs-check` (in `make test`) fails
# when the committed pages differ from what the code gives.
REFERENCE     := $(ROOT)/docs/reference
DOCS_ENV      := ANSIBLE_COLLECTIONS_PATH=$(COLLECTIONS) PATH=$(VENV)/bin:$$PATH
# $(call gen_reference,DIR): the pages into DIR (antsibull-docs wants a directory only its owner can write)
gen_reference  = mkdir -p $(1) && chmod go-w $(1) && $(DOCS_ENV) $(VENV)/bin/antsibull-docs \
                 --config-file $(REFERENCE)/antsibull-docs.cfg collection --use-current --squash-hierarchy \
                 --fail-on-error --cleanup everything --dest-dir $(1) ebpf.fleet >/dev/null
GALAXY_VERSION = $(shell sed -n 's/^version: *//p' $(ROOT)/galaxy.yml)

docs: setup collection-link
	$(call gen_reference,$(REFERENCE)/rst)
	$(VENV)/bin/sphinx-build -M html $(REFERENCE)/rst $(BUILD)/docs -c $(REFERENCE) -q -W --keep-going
	@echo "reference pages: docs/reference/rst; site: $(BUILD)/docs/html/index.html"

# Changelog (antsibull-changelog, changelogs/config.yaml, changelogs/README.md): every change adds a fragment to
# changelogs/fragments/. New modules, plugins and roles need none: their version_added lists them.
# A release is cut with
#     set the version in galaxy.yml, add changelogs/fragments/<version>.yml with a release_summary, then
#     $(DOCS_ENV) antsibull-changelog release
# which moves the fragments into changelogs/changelog.yaml and writes CHANGELOG.md from it.
# `make changelog` shows what that release would write, in a copy, without touching the checkout.
changelog: setup
	@$(call changelog_preview) && echo "preview: $(BUILD)/changelog/CHANGELOG.md"
changelog_preview = rm -rf $(BUILD)/changelog && ctmp=$$(mktemp -d) && c=$$ctmp/ansible_collections/ebpf/fleet && \
	mkdir -p $$c && cp -r $(ROOT)/galaxy.yml $(ROOT)/meta $(ROOT)/plugins $(ROOT)/roles $(ROOT)/changelogs $$c/ && \
	( cd $$c && ANSIBLE_COLLECTIONS_PATH=$$ctmp PATH=$(VENV)/bin:$$PATH $(VENV)/bin/antsibull-changelog release \
	  --version $(GALAXY_VERSION) --date $$(date -u +%F) >$$ctmp/release.log 2>&1 ) || { cat $$ctmp/release.log; exit 1; }; \
	mkdir -p $(BUILD)/changelog && cp $$c/CHANGELOG.md $(BUILD)/changelog/ && rm -rf $$ctmp

# In `make test`: the docs lint (references to ansible.builtin checked too, to other collections refused), the
# reference is current, the fragments lint, and the release would go through.
docs-check: setup collection-link
	@t0=$$(date +%s); \
	$(DOCS_ENV) $(VENV)/bin/antsibull-docs lint-collection-docs --plugin-docs \
	  --validate-collection-refs dependent --disallow-unknown-collection-refs $(ROOT) \
	  || { echo "== docs-check: fix the DOCUMENTATION/EXAMPLES/RETURN or argument_specs above"; exit 1; }; \
	t1=$$(date +%s); tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(call gen_reference,$$tmp/rst); \
	if ! diff -r -q $(REFERENCE)/rst $$tmp/rst; then \
	  echo "== docs-check: docs/reference/rst is not what the code gives: run 'make docs' and commit the result"; \
	  exit 1; fi; \
	t2=$$(date +%s); \
	( cd $(ROOT) && $(VENV)/bin/antsibull-changelog lint ) || { echo "== docs-check: changelogs/fragments/ above"; exit 1; }; \
	$(call changelog_preview); \
	t3=$$(date +%s); \
	echo "== docs-check passed: docs lint $$((t1-t0)) s, reference current $$((t2-t1)) s, changelog lint and release preview $$((t3-t2)) s"

# In `make test`: galaxy-importer, the check Galaxy runs on an upload, on the tarball `build-collection` makes, in
# its own venv (.venv-importer), with tests/galaxy-importer.cfg (no container, no network: no ansible-test; it
# runs ansible-doc on every plugin and ansible-lint). Any ERROR or WARNING fails, except the one for the ignore
# files, which the sanity target keeps empty.
galaxy-check: build-collection
	@t0=$$(date +%s); tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	( cd $$tmp && GALAXY_IMPORTER_CONFIG=$(ROOT)/tests/galaxy-importer.cfg PATH=$(IMPORTER_VENV)/bin:$$PATH \
	  $(IMPORTER_VENV)/bin/python -m galaxy_importer.main $(BUILD)/dist/ebpf-fleet-$(GALAXY_VERSION).tar.gz \
	  >$$tmp/importer.log 2>&1 ) || { cat $$tmp/importer.log; echo "== galaxy-check: galaxy-importer failed"; exit 1; }; \
	problems=$$(grep -E 'ERROR|WARNING|[Ff]ailed' $$tmp/importer.log \
	  | grep -vE '^WARNING: Ignore files skip ansible-test sanity tests, found ignore-[0-9.]+\.txt with 0 statement' || true); \
	if [ -n "$$problems" ] || ! grep -q 'Importer processing completed successfully' $$tmp/importer.log; then \
	  cat $$tmp/importer.log; echo "== galaxy-check: galaxy-importer reported the problems above"; exit 1; fi; \
	echo "== galaxy-check passed in $$(( $$(date +%s) - t0 )) s: $$(grep -c '^Loading ' $$tmp/importer.log) contents loaded," \
	  "ansible-doc and ansible-lint clean ($$(sed -n 's/^Importing with //p' $$tmp/importer.log))"
