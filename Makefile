# Two commands do all set-up on a fresh machine:
#   make book   executes every notebook (profile picked from the hardware) and renders _build/html
#   make book-student   the same book without solutions (_build/student/html), and solution-free
#               copies of the notebooks (_build/student/notebooks/)
#   make test   unit tests plus nbval over every notebook, in the small `ci` profile
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Served as the book's _static/vendor/ through html_extra_path (see _config.yml). Not under the
# root _static/: jupyter-book adds every .js file found there as a <script> to every page.
VENDOR := .cache/book-assets/_static/vendor
NPM_DIR := .cache/npm
NOTEBOOKS := $(wildcard book/*.ipynb notebooks/*.ipynb)

.PHONY: env book book-student test assets clean constraints

env: $(STAMP)

# The exact versions tested on this machine are in constraints.txt; pyproject.toml keeps loose ranges.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[book,test]"
	touch $@

# The Chinese text (the glossary's terms, and its title in every page's navigation) is drawn in
# Noto Sans SC, regular, cut by fontTools down to the characters the pages use (about 40 kB instead
# of 1.5 MB), and cut again whenever a page changes; the same pages give the same bytes.
# _static/cjk.css serves it for CJK characters. fontTools comes into .venv with matplotlib, hence
# the environment first. CJK_SOURCE_SHA256 pins the font that npm fetched.
CJK_SOURCE := $(NPM_DIR)/node_modules/@fontsource/noto-sans-sc/files/noto-sans-sc-chinese-simplified-400-normal.woff
CJK_SOURCE_SHA256 := dc20a86875ff056a6332c353bc9a82d199bb2e5aae1d444f912c1fbff783bfa5
CJK_FONT := $(VENDOR)/noto-sans-sc-subset.woff
PAGES := $(wildcard book/*.md) $(NOTEBOOKS)

# MathJax, mermaid and the Chinese font come from the npm registry and are served from the book's
# own files: no CDN is reachable offline, in CI, or for a reader without internet.
assets: $(VENDOR)/.done $(CJK_FONT)
$(VENDOR)/.done: Makefile
	mkdir -p $(NPM_DIR)
	npm install --silent --no-audit --no-fund --prefix $(NPM_DIR) mathjax@3.2.2 mermaid@11.12.1 \
		@fontsource/noto-sans-sc@5.3.0
	echo "$(CJK_SOURCE_SHA256)  $(CJK_SOURCE)" | sha256sum --check --quiet
	rm -rf $(VENDOR) && mkdir -p $(VENDOR)/mermaid/chunks
	cp -r $(NPM_DIR)/node_modules/mathjax/es5 $(VENDOR)/mathjax
	cp $(NPM_DIR)/node_modules/mermaid/dist/mermaid.esm.min.mjs $(VENDOR)/mermaid/
	cp -r $(NPM_DIR)/node_modules/mermaid/dist/chunks/mermaid.esm.min $(VENDOR)/mermaid/chunks/
	find $(VENDOR) -name '*.map' -delete
	touch $@

$(CJK_FONT): $(VENDOR)/.done $(PAGES) | $(STAMP)
	$(BIN)/fonttools subset $(CJK_SOURCE) $(addprefix --text-file=,$(PAGES)) --flavor=woff \
		--output-file=$@.tmp
	mv $@.tmp $@

# --all: a fresh Sphinx environment every time, so that a warning in an unchanged page still fails
# the build, and a changed _toc.yml cannot trip over a stale one. Executed notebooks stay cached.
# TQDM_DISABLE: progress bars (ours and transformers') would print hundreds of stderr lines into
# the rendered pages; a reader running the notebook still gets them.
book: env assets
	TQDM_DISABLE=1 $(BIN)/jupyter-book build . --all --warningiserror --keep-going

# The student edition: sphinx-exercise's hide_solutions, and the notebooks and the pages' download
# copies (html/_sources) without their {solution} blocks. Executed notebooks come from
# `make book`'s cache when it has them.
STUDENT := _build/student
book-student: env assets
	rm -rf $(STUDENT)
	$(BIN)/python book/tools/editions.py student-config _config.yml $(STUDENT)/_config.yml
	TQDM_DISABLE=1 $(BIN)/jupyter-book build . --all --warningiserror --keep-going --config $(STUDENT)/_config.yml --path-output $(STUDENT)
	mv $(STUDENT)/_build/html $(STUDENT)/html && rm -rf $(STUDENT)/_build
	$(BIN)/python book/tools/editions.py strip-sources $(STUDENT)/html
	$(BIN)/python book/tools/editions.py strip --out $(STUDENT) $(NOTEBOOKS)

# One thread per worker: two pytest workers share two cores, and torch's threads then mostly
# wait on each other (one MiniLM training step: 5.1 s on two threads beside a busy process,
# 1.2 s on one).
test: env
	LLMREC_PROFILE=ci OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile tests $(if $(NOTEBOOKS),--nbval-lax $(NOTEBOOKS))

# Refresh the pins after a deliberate upgrade: make constraints
constraints: env
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean:
	rm -rf _build $(VENDOR)
