
# --- The deploy session (deployer/session.py): what a deployer's token turns into.
# The stack's PostgreSQL login (the deployer's, or an application stack's own
# pgcreds_deploy_<application>), whose password only Vault knows and rotates; a
# rotation may be asked for when the password is about to expire.
path "pgcreds-platform/static-creds/DEPLOYER_ROLE" {
  capabilities = ["read"]
}
path "pgcreds-platform/rotate-role/DEPLOYER_ROLE" {
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

