# The one interface for people and CI. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# libs/ holds the runtime libraries the services' images install; tools/ holds what only
# developers and CI run: the local platform, pytest plugin, bench and chaos (crm-devstack) and
# the event contracts' code generator (crm-codegen).
LIBS := libs/crm-kit libs/crm-events libs/crm-kafka libs/crm-catalogue-view libs/crm-pipeline
TOOLS := tools/crm-devstack tools/crm-codegen
SERVICES := services/catalogue services/leads services/opportunities services/linking services/triggers services/webhooks services/gateway services/console
STAMP := $(VENV)/.installed
# The OpenAPI linters the API's clients use (Redocly CLI, Spectral + OWASP), from the npm registry,
# pinned by their package-lock.json; tests/e2e/test_openapi_tools.py runs them.
LINT_TOOLS := tools/openapi-lint
LINT_STAMP := $(LINT_TOOLS)/node_modules/.installed
# The console's front-end libraries (htmx, SortableJS) from the npm registry, pinned by its
# package-lock.json, copied into the package's static/vendor (never a CDN).
CONSOLE_ASSETS := services/console/assets
CONSOLE_VENDOR := services/console/src/crm_console/static/vendor
CONSOLE_STAMP := $(CONSOLE_VENDOR)/.installed
# The OpenID provider the console's single sign-on test signs in at (panva's oidc-provider),
# from the npm registry, pinned by its package-lock.json; tests/e2e/console/test_signin_oidc.py runs it.
OIDC_PROVIDER := tests/e2e/console/oidc
OIDC_STAMP := $(OIDC_PROVIDER)/node_modules/.installed

# `make token USER=... OFFICE=... ROLES=...`: USER is also the shell's login name, so only
# a USER given on the command line counts.
ifeq ($(origin USER),command line)
TOKEN_USER := $(USER)
else
TOKEN_USER := dev-user
endif
OFFICE ?= office-1
ROLES ?= admin
NAME ?= Dev User

.PHONY: help install run start stop status token test test-fast bench chaos chart lint proto proto-check routes routes-check config-table topics-table console-messages clean distclean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): constraints.txt requirements-dev.txt $(foreach p,$(LIBS) $(TOOLS) $(SERVICES),$(p)/pyproject.toml)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing the platform into $(VENV) (pinned by constraints.txt)"
	@$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -r requirements-dev.txt \
		$(foreach p,$(LIBS) $(TOOLS) $(SERVICES),-e $(p))
	@touch $@

$(LINT_STAMP): $(LINT_TOOLS)/package.json $(LINT_TOOLS)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm is missing: install Node.js 20+ with npm (Debian: apt-get install nodejs npm)"; exit 1; }
	@echo "installing the OpenAPI linters into $(LINT_TOOLS)/node_modules (pinned by package-lock.json)"
	@cd $(LINT_TOOLS) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

$(CONSOLE_STAMP): $(CONSOLE_ASSETS)/package.json $(CONSOLE_ASSETS)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm is missing: install Node.js 20+ with npm (Debian: apt-get install nodejs npm)"; exit 1; }
	@echo "installing the console's front-end libraries into $(CONSOLE_VENDOR) (pinned by package-lock.json)"
	@cd $(CONSOLE_ASSETS) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@mkdir -p $(CONSOLE_VENDOR)
	@cp $(CONSOLE_ASSETS)/node_modules/htmx.org/dist/htmx.min.js $(CONSOLE_ASSETS)/node_modules/sortablejs/Sortable.min.js $(CONSOLE_VENDOR)/
	@touch $@

$(OIDC_STAMP): $(OIDC_PROVIDER)/package.json $(OIDC_PROVIDER)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm is missing: install Node.js 20+ with npm (Debian: apt-get install nodejs npm)"; exit 1; }
	@echo "installing the test OpenID provider into $(OIDC_PROVIDER)/node_modules (pinned by package-lock.json)"
	@cd $(OIDC_PROVIDER) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

install: $(STAMP) $(LINT_STAMP) $(CONSOLE_STAMP) $(OIDC_STAMP) ## Create .venv and install every service and library (pinned), and the OpenAPI linters and test OpenID provider

run: $(STAMP) $(CONSOLE_STAMP) ## Run the whole platform on 127.0.0.1:8080 (Kafka from Maven Central, SQLite); Ctrl-C stops it
	@$(BIN)/python -m crm_devstack run

start: $(STAMP) $(CONSOLE_STAMP) ## Like run, in the background (stop with make stop)
	@$(BIN)/python -m crm_devstack start

stop: ## Stop a platform started with make start (or make run in another terminal)
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m crm_devstack stop; else echo "nothing to stop"; fi

status: $(STAMP) ## Show which processes of the local platform are up
	@$(BIN)/python -m crm_devstack status

token: $(STAMP) ## Print a dev token: make token USER=u1 OFFICE=office-1 ROLES=marketing,viewer
	@$(BIN)/python -m crm_devstack token --user "$(TOKEN_USER)" --office "$(OFFICE)" --roles "$(ROLES)" --name "$(NAME)"

test: $(STAMP) $(LINT_STAMP) $(CONSOLE_STAMP) $(OIDC_STAMP) ## The whole suite: unit, integration and end-to-end, on real Kafka and PostgreSQL it starts itself
	@$(BIN)/python -m pytest

test-fast: $(STAMP) ## Only the tests that need no Kafka or PostgreSQL (the rules on SQLite and in-memory fakes; under a minute)
	@$(BIN)/python -m pytest -m "not integration and not e2e" --ignore=tests/e2e -n auto -p no:schemathesis -p no:hypothesispytest

bench: $(STAMP) ## Measure the platform against baselines from the same run (own Kafka + PostgreSQL); BENCH_SCALE=1 for 100k/1M lists
	@$(BIN)/python -m crm_devstack.bench

chaos: $(STAMP) ## Fault injection: 10,000+ operations while Kafka, each worker, a relay and PostgreSQL fail in turn; 0 lost, 0 duplicated (own Kafka + PostgreSQL)
	@$(BIN)/python -m crm_devstack.chaos --json .run/chaos/chaos.json

chart: $(STAMP) ## Only the Kubernetes checks: helm lint/template, schema validation, manifests vs code (tests/chart)
	@$(BIN)/python -m pytest tests/chart

lint: $(STAMP) ## ruff over the whole tree, mypy over libs/ and tools/, hadolint over the Dockerfile
	@$(BIN)/ruff check libs tools services tests charts
	@$(BIN)/hadolint Dockerfile
	@$(BIN)/mypy --ignore-missing-imports -p crm_kit -p crm_kafka -p crm_catalogue_view -p crm_pipeline -p crm_events -p crm_devstack -p crm_codegen

proto: $(STAMP) ## Regenerate the Python code of the event contracts in proto/
	@$(BIN)/python -m crm_codegen

proto-check: $(STAMP) ## Fail if the generated event code is stale
	@$(BIN)/python -m crm_codegen --check

routes: $(STAMP) ## Derive the gateway's route table from the routes and permissions the services declare (commit the file)
	@$(BIN)/python tools/gateway-routes/gateway_routes.py

routes-check: $(STAMP) ## Fail if the gateway's route table differs from what the services declare
	@$(BIN)/python tools/gateway-routes/gateway_routes.py --check

config-table: $(STAMP) ## Print the configuration table (the README's is generated from it)
	@$(BIN)/python -m crm_devstack.config_table

topics-table: $(STAMP) ## Print the table of who publishes and reads each topic (the README's is generated from it)
	@$(BIN)/python -m crm_devstack.topics_table

console-messages: $(STAMP) ## Re-extract the console's strings, merge them into the Dutch catalogue and compile it (then translate the new ones)
	@$(BIN)/pybabel -q extract -F services/console/babel.cfg -k lazy_gettext -k _l -o services/console/messages.pot services/console
	@$(BIN)/pybabel -q update -N -i services/console/messages.pot -d services/console/src/crm_console/translations -l nl
	@$(BIN)/pybabel -q compile -d services/console/src/crm_console/translations -l nl

clean: ## Remove local run state (.run: databases, Kafka data, logs); keeps the Kafka jar cache
	@find .run -mindepth 1 -maxdepth 1 ! -name kafka-cache -exec rm -rf {} + 2>/dev/null || true

distclean: ## Remove .run entirely and the virtualenv
	@rm -rf .run $(VENV)
