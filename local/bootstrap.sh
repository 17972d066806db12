#!/usr/bin/env bash
# The one-time bootstrap of the deploy path (deployer/bootstrap.py) for the local
# servers, run by `make servers`: the local PostgreSQL's superuser password goes
# to it on stdin from its root-only file, once; afterwards nothing here reads it
# to deploy. Also makes the key pair that stands in for GitHub's OIDC issuer
# (the private half signs the tests' CI tokens; Vault verifies with the public one).
# Stacks: dev, the tests' `tests` (mount citest) and an application stack `acme`
# on it (its own deploy login pgcreds_deploy_acme), which the tests log in as.
# Runs again only when the bootstrap, the policies or the servers' data change.
set -euo pipefail
source "$(dirname "$0")/common.sh"
repo=$(cd "$(dirname "$0")/.." && pwd)
eval "$("$repo/local/postgres.sh" env)"
eval "$("$repo/local/vault-server.sh" env)"

# The GitHub repository CI runs in (the jwt roles' bound `repository` claim).
PGCREDS_REPOSITORY=${PGCREDS_REPOSITORY:-local/pg-dynamic-creds}
oidc="$PGCREDS_LOCAL_DIR/ci-oidc"
if [[ ! -s "$oidc/issuer.pub.pem" ]]; then
  install -d -m 700 "$oidc"
  ( umask 077; openssl genrsa -out "$oidc/issuer.key.pem" 2048 2>/dev/null )
  openssl rsa -in "$oidc/issuer.key.pem" -pubout -out "$oidc/issuer.pub.pem" 2>/dev/null
fi

args=(--pg-host 127.0.0.1 --pg-port "$PGCREDS_PG_PORT" --pg-sslmode "$PGCREDS_PG_SSLMODE" --pg-sslrootcert "$PGCREDS_TEST_CA"
      --app-database postgres --stack dev --stack tests:citest --stack acme:citest:acme:tests
      --repository "$PGCREDS_REPOSITORY" --key-backup-dir "$PGCREDS_LOCAL_DIR/transit-backups"
      --jwt-pubkey "$oidc/issuer.pub.pem")
stamp="$PGCREDS_LOCAL_DIR/bootstrap.stamp"
digest=$( { cat "$repo"/deployer/*.py "$repo"/vault-policies/*.hcl "$oidc/issuer.pub.pem" \
              "$PGCREDS_VAULT_DIR/root.token"; echo "${args[*]}"; } | sha256sum | cut -c1-32)
[[ -f "$stamp" && "$(cat "$stamp")" == "$digest" ]] && exit 0
log "bootstrapping the deploy path (state database, transit keys, Vault's logins, CI's jwt roles)"
( cd "$repo" && "$repo/venv/bin/python" -m deployer.bootstrap "${args[@]}" --password-stdin \
    < "$PGCREDS_SUPERUSER_PASSWORD_FILE" )
echo "$digest" > "$stamp"
# The logins may have changed (another server, a rotated deployer password): every
# cached deploy session tries its logins before it is reused, so none is removed
# here (another checkout's or job's sessions are theirs).
