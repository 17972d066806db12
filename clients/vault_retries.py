"""How long the deploy path's Vault clients ride out a Vault leader election.

A raft cluster's standby forwards requests to the leader; when the leader dies,
the standbys answer 5xx (or redirect to the dead leader) until a new one is
elected, a few seconds. The vault provider and the CLI's transit secrets
manager both use Vault's Go client, which waits 1 to 1.5 s between tries and
tries again `max_retries` times (default 2, about 3 s: an `up` failed half-way
in the failover test). 10 tries cover about 15 s.
"""

VAULT_MAX_RETRIES = 10
