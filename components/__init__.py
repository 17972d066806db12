"""Pulumi components, one per file. None reads stack config: each takes typed Args."""
