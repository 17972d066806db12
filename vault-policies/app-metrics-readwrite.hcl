# What an application reading metrics-readwrite credentials needs: nothing else.
path "database/creds/metrics-readwrite" {
  capabilities = ["read"]
}
