"""Pulumi dynamic providers: how each PostgreSQL and Vault object is created,
read, updated and deleted, with psycopg and hvac.

Why dynamic providers: the bridged `postgresql` and `vault` plugins cannot be
built on machines that reach only the Go module proxy here (issue 2), and
`pulumi_postgresql` has no table resource anyway. Each provider class lives at
module level so that Pulumi pickles it by reference: the state holds the import
path, not a copy of the code. Each resource class names its type, e.g.
`pulumi-python:dynamic/vault:DatabaseRole`, which previews and policies show.
"""
