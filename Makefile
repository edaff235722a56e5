# kvmweb: `make run` starts the dashboard, `make test` runs every test. Both install what
# is missing first (Debian packages, the .venv) and skip what is already there.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
export PORT ?= 8000
export KVMWEB_DATA_DIR ?= $(CURDIR)/var

.PHONY: run test fuzz bench system-packages system-packages-test venv lint check worker clean

run: system-packages venv
	scripts/run-dashboard.sh

test: system-packages-test venv
	scripts/run-tests.sh

# Every API operation with many generated inputs (`make test` runs a few of each).
KVMWEB_FUZZ_EXAMPLES ?= 300
fuzz: system-packages-test venv
	KVMWEB_FUZZ_EXAMPLES=$(KVMWEB_FUZZ_EXAMPLES) DJANGO_SETTINGS_MODULE=tests.settings \
		$(VENV)/bin/python -m pytest -m fuzz tests/api/test_fuzz.py tests/services/test_hostile_input.py tests/hypervisor/test_xml_properties.py

# Every bench/bench_*.py that needs neither root nor a real libvirtd (a benchmark that does says
# so with a line "# bench: needs root"); BENCH_ALL=1 runs them all, as root. Each prints its
# figures as ratios to a floor measured in the same run. KVMWEB_BENCH_POSTGRES (a server URL,
# e.g. postgres://postgres:secret@127.0.0.1:5432/postgres) adds PostgreSQL runs where a
# benchmark has them, in databases of their own that they drop afterwards.
export KVMWEB_BENCH_POSTGRES ?=
bench: system-packages-test venv
	@for file in bench/bench_*.py; do \
		if [ -z "$(BENCH_ALL)" ] && grep -q '^# bench: needs root' "$$file"; then \
			echo "== $$file: skipped (needs root and a real libvirtd: make bench BENCH_ALL=1)"; continue; \
		fi; \
		echo "== $$file"; \
		$(VENV)/bin/python "$$file" || exit 1; \
	done

system-packages:
	scripts/system-packages.sh run

system-packages-test:
	scripts/system-packages.sh test

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

check: venv
	$(VENV)/bin/python manage.py check
	$(VENV)/bin/python manage.py makemigrations --check --dry-run

clean:
	rm -rf var .pytest_cache .ruff_cache
