# Two entry points for newcomers: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
QT_SYSTEM_PACKAGES := xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-randr0 \
	libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxcb-cursor0 \
	libxkbcommon-x11-0 libgl1 libegl1 libfontconfig1 libdbus-1-3

.PHONY: demo test test-core test-napari install install-test system-deps lint bench clean screenshots docs docs-serve release-check \
	docs docs-serve release-check

$(PY):
	@echo "== Creating the virtual environment $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-install only when the package definition changes. pip is not quiet here: a first install
# downloads about 1.5 GB (TensorFlow, Qt, napari) and takes minutes; its lines show it moving.
$(VENV)/.installed-run: pyproject.toml napari.yaml | $(PY)
	@echo "== Installing napari-flow-features with napari and TensorFlow (first time: several minutes)"
	$(PY) -m pip install --progress-bar on -e ".[all]"
	touch $@

$(VENV)/.installed-test: pyproject.toml napari.yaml | $(PY)
	@echo "== Installing napari-flow-features with its test tools (first time: several minutes)"
	$(PY) -m pip install --progress-bar on -e ".[testing]"
	touch $@ $(VENV)/.installed-run

install: $(VENV)/.installed-run
install-test: $(VENV)/.installed-test

demo: install
	@echo "== Running the demo (flow, I3D features, figures, report) into demo-output/"
	$(VENV)/bin/flow-features demo --output demo-output

# Headless Qt needs an X server (Xvfb) and xcb libraries; install them when we can.
system-deps:
	@if command -v dpkg >/dev/null 2>&1 && dpkg -s $(QT_SYSTEM_PACKAGES) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(QT_SYSTEM_PACKAGES) >/dev/null; \
	else \
		echo "GUI tests need Xvfb and Qt's xcb libraries. On Debian/Ubuntu run:"; \
		echo "  sudo apt-get install $(QT_SYSTEM_PACKAGES)"; exit 1; \
	fi

# Lint (ruff, incl. numpydoc docstrings) and types (mypy, configured in pyproject.toml) first.
# TensorFlow and a napari canvas must not share a process: two pytest runs, both must pass; then
# the documentation site and the release check (wheel and sdist installed into a fresh venv).
test: system-deps install-test
	$(PY) -m ruff check src tests benchmarks docs examples conftest.py
	$(PY) -m ruff format --check src tests benchmarks examples docs/_scripts
	$(PY) -m mypy
	@status=0; \
	$(PY) -m pytest tests/core || status=1; \
	$(PY) -m pytest tests/napari || status=1; \
	$(MAKE) --no-print-directory docs || status=1; \
	$(MAKE) --no-print-directory release-check || status=1; \
	exit $$status

test-core: install-test
	$(PY) -m pytest tests/core

test-napari: system-deps install-test
	$(PY) -m pytest tests/napari

lint: install-test
	$(PY) -m ruff check src tests benchmarks docs examples conftest.py
	$(PY) -m ruff format --check src tests benchmarks examples docs/_scripts
	$(PY) -m mypy

# The documentation site into site/ (mkdocs-material, API reference from the docstrings, examples
# gallery from examples/*.py). --strict: a broken link, a missing anchor or a docstring the API
# reference cannot read fails the build; nothing is hidden (no --quiet), so every warning shows.
# The variables quiet the MkDocs 2 notices two packages print at start-up (banners on stderr, not
# warnings of the build: the build passes --strict with or without them).
MKDOCS_ENV := NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true
docs: install-test
	$(MKDOCS_ENV) $(VENV)/bin/mkdocs build --strict

docs-serve: install-test
	$(MKDOCS_ENV) $(VENV)/bin/mkdocs serve

# Wheel and sdist (dist/), the wheel installed into a fresh venv (build/release-venv) with its
# dependencies from pip's cache, then `pip check`, `npe2 validate --imports` and a smoke test there;
# then napari-plugin-manager's own installer, headless, uninstalls it, installs it by name from a
# local index on 127.0.0.1 and uninstalls it again, `npe2 list` checking each (about 40 s more);
# and the release workflow and the conda-forge recipe are checked (docs/release.md).
release-check: install-test
	$(PY) tests/release/check_release.py --dist dist --venv build/release-venv

# docs/images/*.png from a real napari window (the GUI tests run the same script, ~30 s).
screenshots: system-deps install-test
	xvfb-run -a -s "-screen 0 1280x800x24" $(PY) docs/make_screenshots.py

bench: install-test
	$(PY) benchmarks/bench_video_reader.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache site dist build
