"""Pulumi dynamic providers, only for what no provider resource offers:
tables and sample rows (psycopg), lease revocation (hvac), and, until it moves
to `pulumi_aiven`, the Aiven service (aiven-client).

Each provider class lives at module level so that Pulumi pickles it by
reference: the state holds the import path, not a copy of the code. Each
resource class names its type, e.g. `pulumi-python:dynamic/postgresql:Table`,
which previews and policies show.
"""
