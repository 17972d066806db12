"""Pulumi dynamic providers, only for what no provider resource offers:
tables, sample rows and role claims (psycopg), lease revocation (hvac), and the
guard that refuses to destroy an Aiven stack under termination protection.

Each provider class lives at module level so that Pulumi pickles it by
reference: the state holds the import path, not a copy of the code. Each
resource class names its type, e.g. `pulumi-python:dynamic/postgresql:Table`,
which previews and policies show.
"""
