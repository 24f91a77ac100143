# Two commands for a newcomer on a fresh Debian machine (run as root, or
# with sudo available for the system packages):
#   make demo   install everything, boot the embedded cluster, run the
#               face pipeline on the sample data
#   make test   install everything and run the whole test suite
# DATA=/path/to/faces points the demo and the tests at other labelled photos.

PYTHON ?= python3
VENV ?= .venv
DATA ?= $(abspath ../shared/data/faces)
# e.g. AIO_ARGS="--base-port 9080" when 8080 is taken
AIO_ARGS ?=
NATIVE := $(VENV)/lib/storlets/libsbus.so
# Swift's own sample configurations (the sdist's etc/; the wheel has none):
# the multi-node topology test writes its nodes' configurations from them,
# as an operator does.
SWIFT_SAMPLES := $(VENV)/share/swift-samples
# iproute2: ip and tc, for the benchmarks' shaped link (benchmarks/link.py);
# chromium: the tests look at `mlstorlets report` pages in a real browser;
# libseccomp2: the sandbox's seccomp filter
DEBIAN_PACKAGES := bubblewrap memcached gcc make iproute2 chromium libseccomp2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system venv native samples demo lint test bench evaluate screenshot clean

setup: system venv native samples

system:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	    dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

venv: $(VENV)/.installed

# uv (from PyPI) resolves and installs the environment several times faster
# than pip; where it cannot be installed, pip does the same install.  Both
# compile the bytecode (uv only when asked): a sandbox's root is read-only,
# so without it every sandbox start compiles numpy, OpenCV and
# scikit-learn's modules again.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	if $(VENV)/bin/pip install --quiet uv; then \
	    $(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(VENV)/bin/python \
	        -e '.[cluster,test]'; \
	else \
	    $(VENV)/bin/pip install --quiet -e '.[cluster,test]'; \
	fi
	touch $@

native: $(NATIVE)

$(NATIVE): deploy/build-libsbus.sh | venv
	PYTHON=$(VENV)/bin/python deploy/build-libsbus.sh $(VENV)/lib/storlets

samples: $(SWIFT_SAMPLES)/.installed

$(SWIFT_SAMPLES)/.installed: | venv
	rm -rf $(SWIFT_SAMPLES) && mkdir -p $(SWIFT_SAMPLES)/sdist
	version=$$($(VENV)/bin/python -c 'import importlib.metadata as m; print(m.version("swift"))') && \
	$(VENV)/bin/python -m pip download --quiet --no-deps --no-binary :all: \
	    "swift==$$version" -d $(SWIFT_SAMPLES)/sdist && \
	tar xzf $(SWIFT_SAMPLES)/sdist/swift-$$version.tar.gz -C $(SWIFT_SAMPLES) \
	    --strip-components 2 --wildcards "swift-$$version/etc/*-sample"
	rm -rf $(SWIFT_SAMPLES)/sdist
	touch $@

demo: setup
	$(VENV)/bin/mlstorlets aio up $(AIO_ARGS)
	$(VENV)/bin/mlstorlets demo --data "$(DATA)"

lint: venv
	$(VENV)/bin/ruff check mlstorlets storlets tests benchmarks docs/*.py
	$(VENV)/bin/ruff format --check mlstorlets storlets tests benchmarks docs/*.py

test: setup lint
	DATA="$(DATA)" $(VENV)/bin/pytest -p no:cacheprovider tests

# The face recognizer on a labelled data set, on this machine: cross-
# validation, leave one person out, the test photos, the videos.
evaluate: setup
	$(VENV)/bin/python -m mlstorlets.client.faces.evaluate "$(DATA)" --json benchmarks/results/face_evaluation.json

# Every benchmark, each against its baseline in the same run; figures and
# the issue's targets in benchmarks/results/ (about an hour).  The shaped
# link (two network namespaces) needs root.
bench: setup
	$(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python -e '.[cluster,test,bench]' \
	    || $(VENV)/bin/pip install --quiet -e '.[cluster,test,bench]'
	$(VENV)/bin/python benchmarks/link.py
	$(VENV)/bin/python benchmarks/engine.py
	DATA="$(DATA)" $(VENV)/bin/python benchmarks/extract_face.py
	DATA="$(DATA)" $(VENV)/bin/python benchmarks/face_cost.py
	DATA="$(DATA)" $(VENV)/bin/python benchmarks/extract_face.py --link 100mbit --rounds 1
	DATA="$(DATA)" $(VENV)/bin/python benchmarks/extract_face.py --link 1gbit --rounds 1
	$(VENV)/bin/python benchmarks/sgd_remote_vs_local.py
	$(VENV)/bin/python benchmarks/sgd_remote_vs_local.py --link 100mbit
	$(VENV)/bin/python benchmarks/state_in_body.py
	DATA="$(DATA)" $(VENV)/bin/python benchmarks/load.py
	DATA="$(DATA)" $(VENV)/bin/python benchmarks/face_fallback.py
	DATA="$(DATA)" $(VENV)/bin/python benchmarks/apply_model.py
	DATA="$(DATA)" $(VENV)/bin/python benchmarks/many_objects.py --sweep
	DATA="$(DATA)" $(VENV)/bin/python benchmarks/many_objects.py --link 100mbit
	DATA="$(DATA)" $(VENV)/bin/python benchmarks/rotoscope_scale.py
	DATA="$(DATA)" $(VENV)/bin/python benchmarks/scale_out.py
	$(VENV)/bin/python benchmarks/copy_speed.py --repeat 2
	$(VENV)/bin/python benchmarks/copy_memory.py

# The README's picture of a report page (docs/report.jpg), from drawn frames.
screenshot: setup
	$(VENV)/bin/python docs/screenshot.py

clean:
	-$(VENV)/bin/mlstorlets aio down
	rm -rf $(VENV) *.egg-info
