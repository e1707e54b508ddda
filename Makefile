# The two commands of the quick start. Both set up what they need on a fresh Debian 12
# machine (Python 3.11, root): the Debian packages, then .venv with the package.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEB_PACKAGES := qemu-utils qemu-system-common libnbd-bin fio nbdkit zstd rsync python3-venv \
	e2fsprogs fdisk dosfstools mtools postgresql \
	libvirt-daemon-system libvirt-dev pkg-config python3-dev qemu-system-x86 busybox-static \
	qemu-guest-agent libxml2-utils chromium chromium-driver

RUNS ?= 20
SEED ?= 1
FAULTS ?= 6

.PHONY: demo test campaign setup debs lint bench clean

demo: setup
	$(BIN)/seawall demo

test: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -n 3 --durations=25  # three workers on two cores: the end-to-end tests mostly wait on their sites

# The randomized fault-injection campaign (README, Testing): exit status 0 only if clean.
campaign: setup
	$(BIN)/python -m tests.support.campaign --runs $(RUNS) --seed $(SEED) --faults-per-run $(FAULTS)

setup: debs $(VENV)/.installed

debs:
	@bash scripts/install-debs.sh $(DEB_PACKAGES)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

bench: setup
	$(BIN)/python bench/nbd_writes.py

clean:
	rm -rf $(VENV) build *.egg-info
