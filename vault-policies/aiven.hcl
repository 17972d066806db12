
# --- Aiven: the API's long-lived token (written by the bootstrap), from which the
# deploy session mints each run's short-lived token. Application stacks never
# touch the Aiven API, and previews never get this token (it could change the service).
path "pgcreds-aiven/data/api" {
  capabilities = ["read"]
}
# A single stack in aiven mode, once `make bootstrap --aiven-stack` handed its service
# over: its own deploy login there (pgcreds_deployer on the service).
path "pgcreds-platform/static-creds/deployer-stack-STACKNAME" {
  capabilities = ["read"]
}
path "pgcreds-platform/rotate-role/deployer-stack-STACKNAME" {
  capabilities = ["update"]
}
