
# --- The deploy session (deployer/session.py): what a deployer's token turns into.
# The program's PostgreSQL login, whose password only Vault knows and rotates; a
# rotation may be asked for when the password is about to expire.
path "pgcreds-platform/static-creds/deployer" {
  capabilities = ["read"]
}
path "pgcreds-platform/rotate-role/deployer" {
  capabilities = ["update"]
}
# A login to the state database (read-write), valid a few hours.
path "pgcreds-platform/creds/state-write" {
  capabilities = ["read"]
}
# The stack's secrets: encrypt and decrypt with its own transit key, nothing else.
path "transit/encrypt/pgcreds-STACK" {
  capabilities = ["update"]
}
path "transit/decrypt/pgcreds-STACK" {
  capabilities = ["update"]
}
