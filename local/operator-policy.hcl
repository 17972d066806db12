# pgcreds-operator: the local OpenBao's everyday operator token (local/vault-server.sh
# keeps it in operator.token), for working by hand and for the tests. The root
# token stays in its root-only file and is used by the set-up alone, so a slip
# such as `VAULT_TOKEN= bao token revoke -self` costs a token that the next
# `make servers` makes again, never the servers.
#
# The tests make and remove mounts, auth methods, policies, transit keys and
# tokens of any policy, seal the server and read its raft and audit set-up: an
# operator's work. What only a root token should do is denied below.
path "*" {
  capabilities = ["create", "read", "update", "patch", "delete", "list", "sudo"]
}

# Its own policy, and the ways to a new root token or new keys.
path "sys/policies/acl/pgcreds-operator" {
  capabilities = ["read"]
}
path "sys/policy/pgcreds-operator" {
  capabilities = ["read"]
}
path "sys/generate-root" {
  capabilities = ["deny"]
}
path "sys/generate-root/*" {
  capabilities = ["deny"]
}
path "sys/rekey/*" {
  capabilities = ["deny"]
}
path "sys/rotate" {
  capabilities = ["deny"]
}
path "sys/raw" {
  capabilities = ["deny"]
}
path "sys/raw/*" {
  capabilities = ["deny"]
}
