# A pull request's preview (`pulumi preview --refresh`): it reads, it never writes.
# Tested in tests/integration/test_deploy_path.py against OpenBao.

# The vault provider works with a short-lived child token of this one; a child
# token never holds more than its parent.
path "auth/token/create" {
  capabilities = ["update"]
}

# Read what the stack declares: the mount, its connection and roles, the AppRole
# auth method and its roles, the applications' policies.
path "sys/mounts" {
  capabilities = ["read"]
}
path "sys/mounts/database" {
  capabilities = ["read"]
}
path "sys/mounts/database/tune" {
  capabilities = ["read"]
}
path "database/config/*" {
  capabilities = ["read"]
}
path "database/roles/*" {
  capabilities = ["read"]
}
path "sys/auth" {
  capabilities = ["read"]
}
path "sys/mounts/auth/database-approle" {
  capabilities = ["read"]
}
path "sys/mounts/auth/database-approle/tune" {
  capabilities = ["read"]
}
path "auth/database-approle/role/*" {
  capabilities = ["read"]
}
path "sys/policies/acl/pgcreds-database-*" {
  capabilities = ["read"]
}
# `make drift` / the drift workflow: which leases are live (listing needs sudo),
# to tell the logins Vault issued from orphans.
path "sys/leases/lookup/database/creds/*" {
  capabilities = ["list", "sudo"]
}
path "sys/leases/lookup" {
  capabilities = ["update"]
}
# The lease revokers remember which Vault they are in (the identity mount's uuid).
path "sys/mounts/identity" {
  capabilities = ["read"]
}

# The deploy session, read-only: the state database with a login that may only
# SELECT, the stack's secrets decrypted (a preview writes no state), and a
# PostgreSQL login of its own for this preview, which may read the catalogs and
# nothing else (never the deployer's: a pull request's own code runs with it).
path "pgcreds-platform/creds/state-read" {
  capabilities = ["read"]
}
path "pgcreds-platform/creds/preview" {
  capabilities = ["read"]
}
path "transit/decrypt/pgcreds-STACK" {
  capabilities = ["update"]
}
