"""Client helpers that the dynamic providers and the operations scripts (smoke
check, break-glass, the deploy session, the bench, the tests) share: how to
trust the servers' TLS, whose Vault token to use, how to open a PostgreSQL
session. `tls` loads nothing heavy (the program process uses it);
`postgres` loads psycopg, so only the processes that talk to PostgreSQL import it.
"""
