# pg-dynamic-creds: the commands. `make up` then `make test` (see README.md).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
STACK ?= dev
# The program's folder (tests point it at a copy), and one role for the smoke
# check to check (by default it checks every role of the stack, each by its access).
PROJECT ?= .
SMOKE_ROLE ?=
PYTHON := venv/bin/python
UV_VERSION := $(shell sed -n 's/^UV_VERSION=//p' toolchain/pins.env)
# Every Pulumi command runs with the pinned toolchain and the local servers' settings.
DEV_ENV := . local/dev-env.sh
# pulumi, ending a failed command's output with the program's own reason (local/pulumi_run.py).
PULUMI := $(PYTHON) local/pulumi_run.py
# How requirements.txt is made from uv.lock (tests/unit/test_pins.py runs the same).
REQUIREMENTS_EXPORT := --frozen --no-dev --no-hashes --no-header --format requirements-txt


.PHONY: bootstrap up verify drift preview pr-check destroy fleet down revoke test test-vault test-long test-unit toolchain servers venv requirements bench

up: venv toolchain servers ## create or update the dev stack (after a killed run too), then run the smoke check
	$(DEV_ENV) && $(PYTHON) local/recover_stack.py $(STACK) $(PROJECT) && \
	  pulumi stack select --create $(STACK) --cwd $(PROJECT) --secrets-provider hashivault://pgcreds-$(STACK) && \
	  $(PULUMI) up --stack $(STACK) --cwd $(PROJECT) --refresh --yes --skip-preview
	$(MAKE) --no-print-directory verify

verify: venv toolchain servers ## the smoke check alone, against the deployed dev stack
	$(DEV_ENV) && pulumi stack output --stack $(STACK) --cwd $(PROJECT) --json --show-secrets=false | \
	  $(PYTHON) smoke_check.py $(if $(SMOKE_ROLE),--role $(SMOKE_ROLE))

drift: venv toolchain servers ## what the servers hold that the stack does not say: privileges, orphan logins, refresh (exit 1 on drift)
	$(DEV_ENV) && $(PYTHON) drift.py --stack $(STACK) --cwd $(PROJECT)

preview: venv toolchain servers ## what `pulumi up` would change
	$(DEV_ENV) && $(PULUMI) preview --stack $(STACK) --diff

pr-check: venv toolchain servers ## what the pull-request workflow runs, against the dev stack
	$(DEV_ENV) && pulumi stack select --create $(STACK) --secrets-provider hashivault://pgcreds-$(STACK) && \
	  $(PULUMI) preview --stack $(STACK) --diff --refresh --policy-pack policy

destroy: venv toolchain servers ## pulumi destroy on the dev stack, honouring the current settings
	$(DEV_ENV) && $(PYTHON) local/recover_stack.py $(STACK) $(PROJECT) && \
	  $(PULUMI) destroy --stack $(STACK) --cwd $(PROJECT) --yes --skip-preview --run-program

access: venv toolchain servers ## who can do what on the stack: role by table by privileges, declared beside real (the catalog, Vault's TTLs), differences marked
	$(DEV_ENV) && $(PYTHON) -m review.access --stack $(STACK) --cwd $(PROJECT)

revoke: venv toolchain servers ## break-glass: revoke every lease of ROLE=<role> (or ROLE=all) on the stack
	@[[ -n "$(ROLE)" ]] || { echo "usage: make revoke ROLE=<role name>|all [STACK=$(STACK)]" >&2; exit 2; }
	$(DEV_ENV) && pulumi stack output --stack $(STACK) --cwd $(PROJECT) --json | $(PYTHON) break_glass.py --role "$(ROLE)"

fleet: venv toolchain servers ## many application stacks at once: ACTION=up|preview STACKS="a b …" (or STACKS=--all) PARALLEL=4
	@[[ -n "$(STACKS)" ]] || { echo 'usage: make fleet ACTION=up|preview STACKS="billing reporting …" (or STACKS=--all) [PARALLEL=4]' >&2; exit 2; }
	$(DEV_ENV) && $(PYTHON) -m deployer.fleet $(or $(ACTION),preview) $(STACKS) --parallel $(or $(PARALLEL),4)

vault-cluster: venv ## a 3-node OpenBao raft cluster with TLS (local/vault-cluster.sh; ACTION=start|stop|status|leader|kill-leader), for failover
	local/vault-cluster.sh $(or $(ACTION),start)
	@[[ "$(or $(ACTION),start)" != start ]] || echo 'its addresses and root token: eval "$$(local/vault-cluster.sh env)"'

down: ## stop the local PostgreSQL and Vault servers (of PGCREDS_VAULT_SERVER's set)
	local/vault-server.sh stop
	PGCREDS_PG_VERSION=15 local/postgres.sh stop
	PGCREDS_PG_VERSION=18 local/postgres.sh stop

# The HashiCorp Vault run goes beside the main one (its own servers, ports and
# temporary folder): the suite waits on servers far more than it computes.
test: venv toolchain servers ## every test: unit (mocks), integration and policy (real engine), workflows (actionlint), and test-vault beside them
	mkdir -p .local && status=0; \
	  $(MAKE) --no-print-directory test-vault > .local/test-vault.log 2>&1 & vault_run=$$!; \
	  $(DEV_ENV) && $(PYTHON) -m pytest tests client/tests -m "not long and not vault_half" --durations=15 || status=$$?; \
	  wait $$vault_run || status=$$?; \
	  echo "=== make test-vault (HashiCorp Vault), run beside the above: .local/test-vault.log ==="; \
	  cat .local/test-vault.log; exit $$status

test-vault: venv toolchain ## the tests marked both_servers again, and those marked vault_half, on HashiCorp Vault (a set of local servers of its own)
	PGCREDS_VAULT_SERVER=vault $(MAKE) --no-print-directory servers
	export PGCREDS_VAULT_SERVER=vault && $(DEV_ENV) && \
	  $(PYTHON) -m pytest tests -m "both_servers or vault_half" --durations=10 --basetemp=/tmp/pgcreds-test-vault

test-long: venv toolchain servers ## the long tests (credential churn: 10,000 credentials, destroy with 5,000 leases), with their figures
	$(DEV_ENV) && $(PYTHON) -m pytest tests -m long -s --durations=5

test-unit: venv
	$(PYTHON) -m pytest tests/unit

# The program before the deploy path (file backend, passphrase, static admin
# password), measured beside the current one by `make bench`.
BENCH_BASELINE ?= 64e24f6

bench: venv toolchain servers ## timings of up, no-op preview (by phase) and destroy, before/after (prints figures, asserts nothing)
	$(DEV_ENV) && $(PYTHON) bench/bench.py $(if $(BENCH_BASELINE),--baseline $(BENCH_BASELINE))
	$(DEV_ENV) && $(PYTHON) bench/preview_identity.py
	$(DEV_ENV) && $(PYTHON) bench/backend.py

toolchain: ## build (once) and cache the pinned Pulumi CLI and Python language host
	toolchain/build.sh >/dev/null

servers: venv ## start the local PostgreSQL and Vault server (OpenBao, or PGCREDS_VAULT_SERVER=vault; raft, TLS, unsealed) if they are not running; bootstrap once
	local/postgres.sh start
	local/vault-server.sh start
	local/bootstrap.sh

bootstrap: venv ## once per server and Vault: BOOTSTRAP_ARGS="--pg-host … --stack … --repository …", password on stdin
	$(PYTHON) -m deployer.bootstrap $(BOOTSTRAP_ARGS)

venv: venv/.installed
# Exactly uv.lock, never a new resolution: `--locked` stops if pyproject.toml
# changed without an `uv lock`. The same virtualenv as `uv sync` and `pulumi
# install` (the dev group is installed by default, uv included); compiled now, as
# the host runs Python with PYTHONDONTWRITEBYTECODE (uv toolchain).
venv/.installed: pyproject.toml uv.lock toolchain/pins.env Makefile
	@# uv first, with the pip of a new virtualenv (which stays: the policy tests' small
	@# programs use the pip toolchain on this virtualenv).
	[[ -x venv/bin/uv ]] || { python3 -m venv venv && \
	  venv/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"; }
	UV_PROJECT_ENVIRONMENT=venv venv/bin/uv sync --quiet --locked --compile-bytecode
	@# The repository on the virtualenv's path: the package's dynamic resources run in a
	@# Python process the engine starts in the consuming program's folder (docs/package.md).
	echo "$(CURDIR)" > "$$(venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/pgcreds-repository.pth"
	touch $@

requirements: venv ## requirements.txt again from uv.lock (the runtime, every package pinned)
	venv/bin/uv export $(REQUIREMENTS_EXPORT) --output-file requirements.txt
