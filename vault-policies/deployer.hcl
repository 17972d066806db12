# The least a Vault token needs to run `pulumi up` / `pulumi destroy` for a
# stack whose pgcreds:vaultMountPath is `database` (replace it if yours differs).
# Tested in tests/integration/test_vault_policy.py against OpenBao.

# The vault provider works with a short-lived child token of this one (one
# hour, revoked when it ends), so that the deployer's own token never does.
path "auth/token/create" {
  capabilities = ["update"]
}

# See which engines are mounted, and mount, tune and unmount this one.
path "sys/mounts" {
  capabilities = ["read"]
}
path "sys/mounts/database" {
  capabilities = ["create", "read", "update", "delete"]
}
path "sys/mounts/database/tune" {
  capabilities = ["read", "update"]
}

# Revoke every lease of the mount, or of one role, before deleting it.
path "sys/leases/revoke-prefix/database" {
  capabilities = ["update", "sudo"]
}
path "sys/leases/revoke-prefix/database/*" {
  capabilities = ["update", "sudo"]
}
# See whether a role's leases are gone: the revokers let Vault revoke them in the
# background and wait for the list to empty (listing leases needs sudo).
path "sys/leases/lookup/database/creds/*" {
  capabilities = ["list", "sudo"]
}

# The connection to PostgreSQL and the roles; Vault's rotation of the
# connection's login password (pgcreds:vaultRotateRoot).
path "database/config/*" {
  capabilities = ["create", "read", "update", "delete"]
}
# List the connections: a platform stack's destroy waits until no application's is left.
path "database/config/" {
  capabilities = ["list"]
}
path "database/roles/*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "database/rotate-root/*" {
  capabilities = ["update"]
}

# The applications' AppRole auth method (pgcreds:vaultAppRolePath, by default
# <mount>-approle), its roles, and one policy per role named pgcreds-<mount>-<role>.
path "sys/auth" {
  capabilities = ["read"]
}
path "sys/auth/database-approle" {
  capabilities = ["create", "read", "update", "delete", "sudo"]
}
path "sys/mounts/auth/database-approle" {
  capabilities = ["read"]
}
path "sys/mounts/auth/database-approle/tune" {
  capabilities = ["read", "update"]
}
path "auth/database-approle/role/*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "sys/policies/acl/pgcreds-database-*" {
  capabilities = ["create", "read", "update", "delete"]
}
