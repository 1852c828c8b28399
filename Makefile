# Symbiont: `make run` and `make test` set up everything they need, idempotently.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
NODE ?= symbiont
STATE := .symbiont
export SYMBIONT_PYTHON := $(CURDIR)/$(PY)

.PHONY: setup system browser python cookie run shop shop-wasm release test test-elixir test-phoenix test-telemetry test-python wasm wasm-tools shell bench soak lint dialyzer dialyzer-if-built dialyzer-tools format wasm clean lint-quick

setup: system python

# Elixir/Erlang from Debian, only when missing.
system:
	@command -v elixir >/dev/null 2>&1 && command -v erl >/dev/null 2>&1 || { \
	  echo "==> installing Elixir and Erlang from Debian (apt)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq elixir erlang-dev erlang-eunit >/dev/null; }

# Debian's Chromium, only when missing: the status page's test drives a real headless one
# (`mix test --exclude browser` skips it). Only the tests need it, not `make run`.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "==> installing Chromium from Debian (apt) for the browser test"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# The venv is rebuilt only when pyproject.toml or VERSION (the package's version) changes.
# wasm-build (componentize-py, some 30 MB) is there because the tests build Python agents
# into Wasm components (symbiont build-wasm); `make run` alone does not need it.
python: $(VENV)/.installed

# A .venv that is a symlink belongs to another checkout (a git worktree sharing it): it is
# left alone, since `pip install -e .` here would point that checkout's venv at this one.
$(VENV)/.installed: pyproject.toml VERSION
	@if [ -L $(VENV) ]; then echo "==> $(VENV) is a symlink to another checkout's venv: not reinstalled"; exit 0; fi; \
	  echo "==> Python venv in $(VENV) (pip install -e '.[dev,wasm-build,lint]')" && \
	  { test -x $(PY) || $(PYTHON) -m venv $(VENV); } && \
	  $(PY) -m pip install -q --disable-pip-version-check -e '.[dev,wasm-build,lint]' && \
	  touch $@

# The distribution cookie: random, in a directory of mode 700, the file readable by its owner
# only (400). No VM of ours gets it on its command line (--cookie, -setcookie): argv is in
# /proc/PID/cmdline, which every local user can read (docs/SECURITY.md §3). Each VM reads it
# as Erlang always does, from $HOME/.erlang.cookie, with HOME set to $(STATE) for that VM
# alone; the node puts the user's HOME back as it starts (SYMBIONT_USER_HOME), for its hosts.
COOKIE := $(STATE)/.erlang.cookie
COOKIE_HOME := SYMBIONT_USER_HOME="$$HOME" MIX_HOME="$${MIX_HOME:-$$HOME/.mix}" HOME="$(abspath $(STATE))"

# Written aside, then linked into place: ln fails if it exists, so of two makes at once
# (run and shell), one makes it and both use that one.
$(COOKIE):
	@mkdir -p $(STATE) && chmod 700 $(STATE) && rm -f $(STATE)/cookie
	@umask 077 && $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))' > $@.$$$$ && \
	  chmod 400 $@.$$$$ && { ln $@.$$$$ $@ 2>/dev/null || test -e $@; }; made=$$?; rm -f $@.$$$$; exit $$made

# Erlang refuses a cookie file others can read, with a crash report; this says why first.
cookie: $(COOKIE)
	@case "$$(stat -c %a $(COOKIE))" in 400|600) ;; \
	  *) echo "$(COOKIE) must be readable by its owner only: chmod 400 $(COOKIE)" >&2; exit 1;; esac

# Distribution listens on 127.0.0.1:$(DIST_PORT) only, and needs no epmd (config/dist.args).
# The shell connects there and listens nowhere itself.
DIST_PORT ?= 4370
DIST := -args_file config/dist.args -erl_epmd_port $(DIST_PORT)

run: setup cookie
	@echo "==> starting $(NODE)@localhost (distribution on 127.0.0.1:$(DIST_PORT)); attach with: make shell"
	$(COOKIE_HOME) elixir --sname $(NODE)@localhost --erl "$(DIST)" -S mix run --no-halt

# The shop (examples/shop, README.md "The shop"): the node of `make run` with the shop's
# agents and conductor policy (config/runtime.exs applies SYMBIONT_CONFIG on top of
# config/config.exs). Attach with `make shell` as well.
# Its orders stage is the Python class shop.Orders built into a Wasm component (tens of
# seconds the first time; then from _build/wasm-components, and compiled once into the
# hosts' cache).
shop: export SYMBIONT_CONFIG := examples/shop/config.exs
shop: shop-wasm run

shop-wasm: setup
	PYTHONPATH=python $(PY) -m symbiont build-wasm examples/shop/shop.py:Orders -o _build/shop/orders.wasm \
	  --cache-dir _build/wasm-components --precompile

# A release that runs anywhere (README.md, "Releases"): _build/prod/rel/symbiont, with the
# Python SDK and the configured agent code and Wasm modules copied in. SYMBIONT_CONFIG=file
# at build time copies that system's files in too.
release: system
	MIX_ENV=prod mix release --overwrite

shell: cookie
	$(COOKIE_HOME) iex --sname shell_$$$$@localhost --erl "$(DIST) -dist_listen false" --remsh $(NODE)@localhost

# ExUnit runs beside pytest, then Dialyzer: ExUnit's sync half mostly waits on real hosts
# and timers, which leaves a core to the other two. Their output is kept until ExUnit is
# done, then printed whole, so that each one's summary line stands on its own. Dialyzer
# runs when this machine has its PLT (make lint builds it once): building it here, beside
# the tests, took a fresh clone's make test past five minutes.
test: setup lint-quick browser
	@rm -f _build/pytest.out _build/dialyzer.out; \
	{ $(PY) -m pytest -q python/tests > _build/pytest.out 2>&1; echo $$? > _build/pytest.rc; \
	  $(MAKE) --no-print-directory dialyzer-if-built > _build/dialyzer.out 2>&1; } & beside=$$!; \
	$(ELIXIR_TEST); elixir=$$?; \
	wait $$beside; dialyzer=$$?; \
	echo "==> pytest (ran beside mix test)"; cat _build/pytest.out; \
	echo "==> Dialyzer (ran beside mix test)"; cat _build/dialyzer.out; \
	test $$elixir -eq 0 && test "$$(cat _build/pytest.rc)" -eq 0 && test $$dialyzer -eq 0

# The checks of `make lint` that take seconds, run by `make test` and so by CI: warnings
# (of what the test build compiles, which mix test then reuses), formatting, ruff, mypy
# --strict (some 3 s cold). Dialyzer stays in `make lint`: its PLT alone takes minutes to
# build in a fresh clone, past CI's budget.
lint-quick:
	MIX_ENV=test mix compile --warnings-as-errors
	mix format --check-formatted
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)
	$(PY) -m mypy python/symbiont

# Multi-node tests start and stop :peer nodes; OTP 25's global would otherwise cut
# surviving nodes off "to prevent overlapping partitions".
ELIXIR_TEST := ELIXIR_ERL_OPTIONS="-kernel prevent_overlapping_partitions false" mix test
test-elixir: browser
	$(ELIXIR_TEST)

# The mesh suite against the real Phoenix.PubSub: make test-phoenix PHOENIX_PUBSUB_PATH=...
test-phoenix: setup
	@test -n "$(PHOENIX_PUBSUB_PATH)" || { echo "set PHOENIX_PUBSUB_PATH to a checkout of phoenix_pubsub"; exit 2; }
	PHOENIX_PUBSUB_PATH="$(PHOENIX_PUBSUB_PATH)" mix test --only phoenix_pubsub

# Symbiont.Telemetry against the real :telemetry (the same handlers on both, and Symbiont's
# spans passed on to it): make test-telemetry TELEMETRY_PATH=../telemetry
test-telemetry: setup
	@test -n "$(TELEMETRY_PATH)" || { echo "set TELEMETRY_PATH to a checkout of beam-telemetry/telemetry"; exit 2; }
	TELEMETRY_PATH="$(TELEMETRY_PATH)" mix test --only telemetry_lib test/symbiont/telemetry_test.exs

test-python:
	$(PY) -m pytest -q python/tests

# Every benchmark of the suite (bench/results.exs), each in a BEAM of its own, then one
# table in bench/RESULTS.md (bench/README.md). QUICK=1: the one-minute version;
# BENCHES="mesh soak": only those (the others' last results stay in the table).
bench: setup
	QUICK=$(QUICK) mix run --no-start bench/run.exs $(BENCHES)

# The soak (bench/soak.exs): the chaos test's pipeline under kill -9 for ten minutes, its
# losses, exact counts, throughput and memory curve in bench/RESULTS.md. SOAK_S=60 (or
# QUICK=1) shortens it, SOAK_RATE sets the load (messages a second).
soak: setup
	QUICK=$(QUICK) mix run --no-start bench/run.exs soak

format: setup
	mix format
	$(VENV)/bin/ruff format $(PY_SOURCES)

PY_SOURCES := python test/fixtures/python bench examples

# Dialyzer from Debian (no Hex): the PLT of what Symbiont calls (OTP's erts, kernel,
# stdlib, crypto, inets; Elixir, Logger, and ExUnit for test/support) is kept under
# _build; it is built once per machine, OTP and Elixir (about a minute) and kept in the
# user's cache too, from which a fresh clone's _build takes a copy instead of building
# it again (built beside a fresh clone's tests, it took make test past five minutes).
# Each run then analyses the test build's ebin (lib/ and test/support/, compiled by
# lint-quick), some 5 s.
# Expanded only by the Dialyzer targets, at their first use (`=` that sets itself with
# `:=` then): no other target starts a VM for them, each starts one once, not at every
# mention, and they read no terminal input (a shell's, such as `make shell`'s).
ELIXIR_LIB = $(eval ELIXIR_LIB := $(shell elixir -e 'IO.puts(:code.lib_dir(:elixir) |> Path.dirname())' </dev/null 2>/dev/null))$(ELIXIR_LIB)
PLT_CACHE = $(eval PLT_CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/symbiont/dialyzer-$(shell elixir -e 'IO.write("otp#{System.otp_release()}-elixir#{System.version()}")' </dev/null 2>/dev/null).plt)$(PLT_CACHE)
PLT = _build/$(notdir $(PLT_CACHE))
PLT_APPS = erts kernel stdlib crypto inets $(ELIXIR_LIB)/elixir/ebin $(ELIXIR_LIB)/logger/ebin $(ELIXIR_LIB)/ex_unit/ebin

# Everything make test checks (lint-quick and Dialyzer), and a full recompile of the dev
# build with warnings as errors.
lint: setup lint-quick dialyzer
	mix compile --force --warnings-as-errors

dialyzer: dialyzer-tools
	@test -f $(PLT_CACHE) || { echo "==> building the Dialyzer PLT in $(PLT_CACHE) (once, about a minute)"; \
	  mkdir -p $(dir $(PLT_CACHE)) && \
	  dialyzer -pa $(ELIXIR_LIB)/elixir/ebin --build_plt --output_plt $(PLT_CACHE).$$$$ --apps $(PLT_APPS) >/dev/null; \
	  test -f $(PLT_CACHE).$$$$ && mv $(PLT_CACHE).$$$$ $(PLT_CACHE); }
	@test -f $(PLT) || { mkdir -p _build && cp $(PLT_CACHE) $(PLT).$$$$ && mv $(PLT).$$$$ $(PLT); }
	dialyzer -pa $(ELIXIR_LIB)/elixir/ebin --plt $(PLT) --no_check_plt _build/test/lib/symbiont/ebin

dialyzer-if-built:
	@if command -v dialyzer >/dev/null 2>&1 && { test -f $(PLT) || test -f $(PLT_CACHE); }; then \
	  $(MAKE) --no-print-directory dialyzer; \
	  else echo "==> Dialyzer skipped: this machine has no PLT for it yet (make lint builds it once, about a minute)"; fi

dialyzer-tools:
	@command -v dialyzer >/dev/null 2>&1 || { \
	  echo "==> installing Dialyzer from Debian (apt)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq erlang-dialyzer >/dev/null; }

# The Wasm examples: WAT through wat2wasm, C through Debian's clang for wasm32-wasi. The
# built .wasm files are committed; this rebuilds them (installing the toolchain if needed).
# (*_component.wat are components, which wabt cannot read: wasmtime's wat2wasm builds them.)
WASM_SRC := $(filter-out %_component.wat,$(wildcard priv/wasm/*.wat priv/wasm/*.c))
WASM_COMPONENTS := $(patsubst %.wat,%.wasm,$(wildcard priv/wasm/*_component.wat))
# The shop's pricing stage: one C source, two versions (v2 has a bug on purpose).
SHOP_WASM := examples/shop/pricing.wasm examples/shop/pricing_v2.wasm
WASM_OUT := $(addsuffix .wasm,$(basename $(WASM_SRC))) $(SHOP_WASM) $(WASM_COMPONENTS)
WASM_CC := clang --target=wasm32-wasi -O2 -mexec-model=reactor -Wl,--strip-all
WASM_PKGS := clang lld wasi-libc libclang-rt-14-dev-wasm32 wabt

wasm: wasm-tools $(WASM_OUT)
	@ls -l $(WASM_OUT)

wasm-tools:
	@dpkg -s $(WASM_PKGS) >/dev/null 2>&1 || { \
	  echo "==> installing the Wasm toolchain from Debian (apt): $(WASM_PKGS)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(WASM_PKGS) >/dev/null; }

priv/wasm/%_component.wasm: priv/wasm/%_component.wat setup
	$(PY) -c 'import sys, wasmtime; open(sys.argv[2], "wb").write(wasmtime.wat2wasm(open(sys.argv[1]).read()))' $< $@

priv/wasm/%.wasm: priv/wasm/%.wat
	wat2wasm $< -o $@

priv/wasm/%.wasm: priv/wasm/%.c
	$(WASM_CC) -o $@ $<

examples/shop/pricing.wasm: examples/shop/pricing.c
	$(WASM_CC) -o $@ $<

examples/shop/pricing_v2.wasm: examples/shop/pricing.c
	$(WASM_CC) -DPRICING_V2 -o $@ $<

clean:
	rm -rf _build $(VENV) $(STATE)
