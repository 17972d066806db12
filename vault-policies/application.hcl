# The least a Vault token needs to run `pulumi up` / `pulumi destroy` for the
# application stack of APPLICATION (pgcreds:stackKind application) on the
# platform's mount `database`: its own connection, roles and AppRoles, and
# nothing of another application's or of the platform's. It may write no policy:
# every application role's AppRole gets the platform's one templated policy
# (pgcreds-database-applications), which reads the credentials of the role of
# the AppRole's own name. Tested in tests/integration/test_split_stacks.py.

# The vault provider works with a short-lived child token of this one.
path "auth/token/create" {
  capabilities = ["update"]
}

# The lease revokers look whether the mount is still there.
path "sys/mounts" {
  capabilities = ["read"]
}

# Its connection (named after it; one more per username template), its roles,
# Vault's rotation of its connections' logins.
path "database/config/APPLICATION" {
  capabilities = ["create", "read", "update", "delete"]
}
path "database/config/APPLICATION-*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "database/roles/APPLICATION-*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "database/rotate-root/APPLICATION" {
  capabilities = ["update"]
}
path "database/rotate-root/APPLICATION-*" {
  capabilities = ["update"]
}

# Revoke the leases of one of its roles before deleting it.
path "sys/leases/revoke-prefix/database/creds/APPLICATION-*" {
  capabilities = ["update", "sudo"]
}
# ... and see when they are gone (listing leases needs sudo).
path "sys/leases/lookup/database/creds/APPLICATION-*" {
  capabilities = ["list", "sudo"]
}

# Its roles in the platform's AppRole auth method, with the platform's policy
# and no other.
path "auth/database-approle/role/APPLICATION-*" {
  capabilities = ["create", "read", "update", "delete"]
  allowed_parameters = {
    "token_policies" = [["pgcreds-database-applications"]]
    "*" = []
  }
  denied_parameters = {
    "policies" = []
  }
}
