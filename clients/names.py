"""Names that go into Vault policy paths and PostgreSQL role names, matched whole
(`fullmatch`): the settings check them, and so does the bootstrap, which writes
the policies. No `+`, `*`, `/`, space, quote or control character can widen a
policy to what is not the stack's."""

from __future__ import annotations

import re

STACK_NAME = re.compile(r"[a-z][a-z0-9-]{0,40}")
MOUNT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,40}")
# No - or _: an application's names are `<application>-…` in Vault and
# `<application>_…` in PostgreSQL, and a policy's `<application>-*` must never
# match another application's names.
APPLICATION_NAME = re.compile(r"[a-z][a-z0-9]{0,19}")
