# wspy: `make run` starts the demo echo server, `make test` runs the suite.
# Both create the virtualenv they need on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY27 ?= $(shell pyenv root 2>/dev/null)/versions/2.7.18/bin/python
AUTOBAHN := .autobahn
WSTEST := $(AUTOBAHN)/venv/bin/wstest
TEST_DEPS := pytest coverage pyOpenSSL hypothesis websockets redis werkzeug flask gunicorn django gevent
# The reference servers of the benchmark, installed for it only.
BENCH_DEPS := websockets picows uvloop aiohttp flask-sock
# The documentation site's builder, its theme and its Markdown parser.
DOCS_DEPS := sphinx furo myst-parser
PORT ?= 8000

.PHONY: run test lint docs autobahn autobahn-server autobahn-asyncserver autobahn-client \
	autobahn-asyncclient autobahn-gunicorn autobahn-werkzeug autobahn-gevent \
	autobahn-performance autobahn-deflate-subset autobahn-deflate autobahn-wss bench bench-workers \
	bench-fallback bench-wsgi bench-scale dist check-dist clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: setup.py wspy/_speedups.c | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.test-deps: Makefile | $(BIN)/python
	$(BIN)/python -m pip install -q $(TEST_DEPS)
	touch $@

$(VENV)/.bench-deps: Makefile | $(BIN)/python
	$(BIN)/python -m pip install -q $(BENCH_DEPS)
	touch $@

$(VENV)/.docs-deps: Makefile | $(BIN)/python
	$(BIN)/python -m pip install -q $(DOCS_DEPS)
	touch $@

$(VENV)/.lint-deps: | $(BIN)/python
	$(BIN)/python -m pip install -q ruff mypy
	touch $@

run: $(VENV)/.installed
	$(BIN)/python -m wspy serve --port $(PORT)

# The whole suite with the C accelerator, then again on the pure-Python fallback, less the
# tests of what runs above the protocol core the same either way (WSGI servers, documents,
# browsers, nginx, Redis, the command line, worker processes): FALLBACK=0 skips the second
# run (CI makes it on the default Python only, to stay within 45 minutes).
FALLBACK ?= 1
ABOVE_THE_CORE := test_wsgi.py test_wsgi_browser.py test_wsgi_gevent.py test_wsgi_handoff.py \
	test_wsgi_stop.py test_docs.py test_readme.py test_examples.py test_browser.py \
	test_nginx.py test_fanout.py test_main.py test_porting.py test_signals.py test_workers.py
# COVERAGE=0 runs the tests without measuring coverage (CI on the other Pythons: faster).
COVERAGE ?= 1
RUN_TESTS = $(if $(filter 0,$(COVERAGE)),$(BIN)/python,$(BIN)/coverage run -p --branch --source wspy)
test: $(VENV)/.installed $(VENV)/.test-deps
	rm -f .coverage .coverage.*
	$(BIN)/python -c 'import wspy.protocol.masking as m; assert m.HAS_SPEEDUPS, "C extension not built"'
	$(RUN_TESTS) -m pytest -q test
	[ "$(FALLBACK)" = 0 ] || WSPY_NO_SPEEDUPS=1 $(RUN_TESTS) \
		-m pytest -q test $(addprefix --ignore=test/,$(ABOVE_THE_CORE))
	[ "$(COVERAGE)" = 0 ] || $(BIN)/coverage combine -q
	[ "$(COVERAGE)" = 0 ] || $(BIN)/coverage report --show-missing --skip-covered

lint: $(VENV)/.installed $(VENV)/.lint-deps
	$(BIN)/ruff check wspy test examples bench setup.py
	# typing_sample.py: a typed user program; its deliberate mistakes must stay errors.
	$(BIN)/mypy --strict wspy test/typing_sample.py

# The documentation site (docs/: Sphinx, MyST pages, autodoc reference) into build/docs;
# any warning fails the build. Open build/docs/index.html.
docs: $(VENV)/.installed $(VENV)/.docs-deps
	$(BIN)/sphinx-build -W --keep-going -b html docs build/docs
	@echo 'make docs: open build/docs/index.html'

$(WSTEST):
	$(PY27) -m pip install --user -q 'virtualenv==20.15.1'
	$(PY27) -m virtualenv -q $(AUTOBAHN)/venv
	$(AUTOBAHN)/venv/bin/pip install -q autobahntestsuite==25.10.1

# Autobahn|Testsuite cases 1-7 and 10 against both servers and both clients (connect and
# AsyncClient), 9.* (limits and performance) against both servers, the same over wss://
# for both servers, and a permessage-deflate subset (the first four cases of each 12.* and
# 13.* group, 48 in all) against all four, and 1-7 and 10 against wspy.wsgi under gunicorn
# and Werkzeug; fails on any FAILED.
# `make autobahn-deflate` runs all 216 permessage-deflate cases (about 25 minutes).
# Case ids, not patterns: wstest matches a pattern as a prefix ('12.*.1' takes 12.1.10 too).
DEFLATE_SUBSET := $(foreach g,1 2 3 4 5,$(foreach n,1 2 3 4,12.$(g).$(n))) \
	$(foreach g,1 2 3 4 5 6 7,$(foreach n,1 2 3 4,13.$(g).$(n)))
AGENTS := Server AsyncServer client AsyncClient

autobahn: autobahn-server autobahn-asyncserver autobahn-client autobahn-asyncclient \
	autobahn-performance autobahn-deflate-subset autobahn-wss autobahn-gunicorn \
	autobahn-werkzeug autobahn-gevent

# wspy.wsgi's endpoint (test/autobahn/wsgi_echo.py) under gunicorn's gthread worker, under
# Werkzeug's development server and under gunicorn's gevent worker: cases 1-7 and 10.
autobahn-gunicorn: $(VENV)/.installed $(WSTEST)
	$(BIN)/python test/autobahn/run.py gunicorn --wstest $(WSTEST) --outdir reports

autobahn-werkzeug: $(VENV)/.installed $(WSTEST)
	$(BIN)/python test/autobahn/run.py werkzeug --wstest $(WSTEST) --outdir reports

autobahn-gevent: $(VENV)/.installed $(WSTEST)
	$(BIN)/python test/autobahn/run.py gevent --wstest $(WSTEST) --outdir reports

autobahn-server: $(VENV)/.installed $(WSTEST)
	$(BIN)/python test/autobahn/run.py Server --wstest $(WSTEST) --outdir reports

autobahn-asyncserver: $(VENV)/.installed $(WSTEST)
	$(BIN)/python test/autobahn/run.py AsyncServer --wstest $(WSTEST) --outdir reports

autobahn-performance: $(VENV)/.installed $(WSTEST)
	$(BIN)/python test/autobahn/run.py Server --wstest $(WSTEST) --outdir reports/9 \
		--cases '9.*' --exclude
	$(BIN)/python test/autobahn/run.py AsyncServer --wstest $(WSTEST) --outdir reports/9 \
		--cases '9.*' --exclude

# Both servers over wss:// (certificates made for the run): 1-7, 9 and 10.
autobahn-wss: $(VENV)/.installed $(WSTEST)
	for agent in Server AsyncServer; do \
		$(BIN)/python test/autobahn/run.py $$agent --tls --wstest $(WSTEST) \
			--outdir reports/wss --exclude '12.*' '13.*' || exit 1; \
	done

autobahn-client: $(VENV)/.installed $(WSTEST)
	$(BIN)/python test/autobahn/run.py client --wstest $(WSTEST) --outdir reports

autobahn-asyncclient: $(VENV)/.installed $(WSTEST)
	$(BIN)/python test/autobahn/run.py AsyncClient --wstest $(WSTEST) --outdir reports

autobahn-deflate-subset: $(VENV)/.installed $(WSTEST)
	for agent in $(AGENTS); do \
		$(BIN)/python test/autobahn/run.py $$agent --wstest $(WSTEST) --outdir reports/deflate \
			--cases $(DEFLATE_SUBSET) --exclude || exit 1; \
	done

autobahn-deflate: $(VENV)/.installed $(WSTEST)
	for agent in $(AGENTS); do \
		$(BIN)/python test/autobahn/run.py $$agent --wstest $(WSTEST) --outdir reports/deflate \
			--cases '12.*' '13.*' --exclude --timeout 1800 || exit 1; \
	done

# An sdist and a wheel in dist/ (build fails on any warning of the build backend's).
dist: | $(BIN)/python
	$(BIN)/python -m pip install -q build
	rm -rf dist build
	mkdir build
	$(BIN)/python -m build --outdir dist . > build/dist.log 2>&1 || \
		{ cat build/dist.log; exit 1; }
	@if grep -iE 'warning|deprecat' build/dist.log | grep -v 'byte-compiling is disabled'; then \
		echo 'make dist: the build printed warnings (build/dist.log)' >&2; exit 1; fi
	ls dist

# Each artifact in a fresh venv: the wheel installs and imports with the C accelerator;
# the sdist installs where no C compiler works (pure Python), holds every tracked file
# but the CI's, and its tests pass from the unpacked sdist against that install
# (SDIST_TESTS: those that read more than wspy/; SDIST_TESTS=test for the whole suite).
SDIST_TESTS ?= test/test_examples.py test/test_readme.py test/test_porting.py test/test_docs.py
check-dist: dist
	rm -rf build/check
	$(PYTHON) -m venv build/check/wheel
	build/check/wheel/bin/python -m pip install -q dist/wspy-*.whl
	cd build && check/wheel/bin/python -c 'import wspy, wspy.protocol.masking as m; \
		assert m.HAS_SPEEDUPS, "wheel without the C accelerator"; \
		f = wspy.Frame(2, b"x" * 300, b"abcd"); assert wspy.read_frame(f.pack()) == f; \
		print("wheel: wspy", wspy.__version__, "with the C accelerator")'
	$(PYTHON) -m venv build/check/nocc
	CC=/bin/false build/check/nocc/bin/python -m pip install -q "$$(ls dist/wspy-*.tar.gz)[test]"
	cd build && check/nocc/bin/python -c 'import wspy, wspy.protocol.masking as m; \
		assert not m.HAS_SPEEDUPS; f = wspy.Frame(2, b"x" * 300, b"abcd"); \
		assert wspy.read_frame(f.pack()) == f; print("sdist: wspy", wspy.__version__, \
		"in pure Python, installed without a compiler")'
	mkdir -p build/check/src && tar -xzf dist/wspy-*.tar.gz -C build/check/src
	git ls-files | grep -v '^\.' | sort > build/check/tracked
	cd build/check/src/wspy-* && find . -type f | sed 's|^\./||' | sort > ../../shipped
	comm -23 build/check/tracked build/check/shipped > build/check/missing
	[ ! -s build/check/missing ] || { echo 'tracked files missing from the sdist:' >&2; \
		cat build/check/missing >&2; exit 1; }
	# The script pytest, not python -m pytest: the installed wspy, not the unpacked source.
	cd build/check/src/wspy-* && ../../nocc/bin/pytest -q -p no:cacheprovider \
		$(SDIST_TESTS)

# The load generator speaks TLS (OpenSSL) and permessage-deflate (zlib).
bench/loadgen: bench/loadgen.c
	@printf '#include <openssl/ssl.h>\n#include <zlib.h>\n' | $(CC) -E -x c - >/dev/null 2>&1 || \
		{ echo 'bench/loadgen needs the OpenSSL and zlib headers:' \
			'apt-get install libssl-dev zlib1g-dev' >&2; exit 1; }
	$(CC) -O3 -Wall -Wextra -o $@ $< -lssl -lcrypto -lz

# Echo benchmarks, servers on CPU 0 and the C load generator on CPU 1, wspy beside
# websockets, picows and aiohttp (plain, text with real masks, wss, permessage-deflate);
# prints medians of 5 and ratios against websockets (about 21 minutes;
# BENCH_ARGS=--quick for one short pass). Then the client, and the rows under gunicorn
# (bench-wsgi).
bench: $(VENV)/.installed $(VENV)/.bench-deps bench/loadgen
	@command -v openssl >/dev/null || { echo 'the wss rows need: apt-get install openssl' >&2; exit 1; }
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/client.py
	$(BIN)/python bench/run.py --wsgi $(BENCH_ARGS)

# AsyncServer in 1 and in 2 worker processes (Workers, SO_REUSEPORT), nothing pinned.
bench-workers: $(VENV)/.installed bench/loadgen
	$(BIN)/python bench/run.py --workers $(BENCH_ARGS)

# The pure-Python fallback (no C accelerator) of both servers against websockets
# (which has its C masking), both pinned as in `make bench`.
bench-fallback: $(VENV)/.installed $(VENV)/.bench-deps bench/loadgen
	$(BIN)/python bench/run.py --fallback $(BENCH_ARGS)

# WebSockets in a WSGI application under one gunicorn gthread worker (16 threads), pinned as
# in `make bench`: wspy.wsgi (WebSocketApplication, and HandOff) against flask-sock.
bench-wsgi: $(VENV)/.installed $(VENV)/.bench-deps bench/loadgen
	$(BIN)/python bench/run.py --wsgi $(BENCH_ARGS)

bench/scale_client: bench/scale_client.c
	$(CC) -O2 -Wall -Wextra -o $@ $<

# 100,000 idle connections to AsyncServer in Workers (SO_REUSEPORT), opened by
# bench/scale_client in several processes from several loopback addresses, then 16-byte
# broadcasts through Redis (RedisFanout) to all of them: delivery latency, server memory
# per connection (needs redis-server; SCALE_ARGS=--connections 5000 for a quick run).
$(VENV)/.scale-deps: | $(BIN)/python
	$(BIN)/python -m pip install -q redis
	touch $@

bench-scale: $(VENV)/.installed $(VENV)/.scale-deps bench/scale_client
	@command -v redis-server >/dev/null || { echo 'bench-scale needs: apt-get install redis-server' >&2; exit 1; }
	$(BIN)/python bench/scale.py $(SCALE_ARGS)

clean:
	rm -rf $(VENV) $(AUTOBAHN) reports build dist *.egg-info wspy/*.so .coverage .coverage.* \
		bench/loadgen bench/scale_client
