
# --- Aiven: the API's long-lived token (written by the bootstrap), from which the
# deploy session mints each run's short-lived token. Application stacks never
# touch the Aiven API, and previews never get this token (it could change the service).
path "pgcreds-aiven/data/api" {
  capabilities = ["read"]
}
