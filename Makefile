# Two entry points, both self-contained on a fresh machine with Python 3.11:
#   make run   -> set up, then build and benchmark the default target (rpi4 artifacts of MobileNetV2)
#   make test  -> set up, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgekit-installed
# Exact versions of every dependency (all extras), the set the tests pass with; pyproject.toml keeps
# ranges for library users. `make lock` refreshes it.
LOCK := requirements/lock.txt

.PHONY: setup run test check-wheel clean lock

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -c $(LOCK)
	@# The demo's window test needs OpenCV's GUI build, which must not sit beside the headless one:
	@# it gets a folder of its own, used only by that test's subprocess.
	$(BIN)/python -m pip install --quiet --no-deps --target $(VENV)/cv2-gui \
		"opencv-python==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("opencv-python-headless"))')" \
		|| echo "note: no GUI OpenCV for the demo window test (it will skip)"
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/edgekit convert --target rpi4
	$(BIN)/edgekit bench build/rpi4 --threads 1,2 --iterations 50

# System tools some tests use: sshd (remote bench against 127.0.0.1), Xvfb (the demo's window),
# qemu-user-static and debootstrap (bench --emulate aarch64: builds an arm64 root in
# ~/.cache/edgekit once, ~40 s with network). Installed when missing and we are root with apt;
# otherwise those tests skip with the reason.
SYSTEM_PACKAGES := openssh-server xvfb xauth qemu-user-static debootstrap

test: setup
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ [ ! -x /usr/sbin/sshd ] || ! command -v xvfb-run >/dev/null || \
		  ! command -v qemu-aarch64-static >/dev/null || [ ! -x /usr/sbin/debootstrap ]; }; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES); fi
	$(BIN)/python -m pytest -q
	tools/check_wheel.sh $(PYTHON)

# The wheel, installed into a fresh venv outside the repo, used from another folder (~2 min).
check-wheel:
	tools/check_wheel.sh $(PYTHON)

clean:
	rm -rf build .pytest_cache

# Re-resolve $(LOCK) for Python 3.11 on linux x86_64 with pip-tools (in a scratch venv), keeping each
# pin that still fits; `make lock LOCK_ARGS=--upgrade` moves everything to the newest allowed.
LOCK_VENV ?= /tmp/edgekit-piptools
lock:
	[ -x $(LOCK_VENV)/bin/pip-compile ] || \
		{ $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet pip-tools; }
	@# edgekit is left unpinned: its extras name it (edgekit[onnx,...]), which would pin this folder
	$(LOCK_VENV)/bin/pip-compile --quiet --extra dev --strip-extras --no-emit-index-url \
		--no-emit-find-links --unsafe-package edgekit --unsafe-package pip --unsafe-package setuptools \
		$(LOCK_ARGS) --output-file $(LOCK) pyproject.toml
	@# torch resolves to the local CPU wheel (2.13.0+cpu); PyPI's release has no +cpu label
	sed -i 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/' $(LOCK)
