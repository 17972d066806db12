"""The drift report's pure parts: matching users to leases, and the audit's
view of a settings change."""

from __future__ import annotations

import datetime

from clients.privilege_audit import Declared
from drift import orphans

NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)


def at(minutes: float) -> datetime.datetime:
    return NOW + datetime.timedelta(minutes=minutes)


def test_each_lease_accounts_for_one_user_and_the_rest_are_orphans():
    users = [("a", at(60)), ("b", at(61)), ("c", at(62))]
    found = orphans(users, [at(60) + datetime.timedelta(seconds=1), at(62)], NOW)
    assert found == ["b (VALID UNTIL 2026-12-01 13:01:00 UTC, no lease expires then)"]


def test_users_of_one_second_are_counted_not_named():
    users = [("a", at(60)), ("b", at(60))]
    (found,) = orphans(users, [at(60)], NOW)
    assert found.startswith("1 of a, b (") and "a lease does not say which" in found


def test_a_user_whose_validity_passed_long_ago_is_an_orphan_whatever_the_leases():
    users = [("old", at(-10))]
    assert orphans(users, [at(-10)], NOW) == ["old (VALID UNTIL 2026-12-01 11:50:00 UTC, passed)"]


def test_a_planned_change_allows_what_either_the_old_or_the_new_settings_grant():
    def declared(privileges: list[str], tables: list[str]) -> Declared:
        return Declared(
            database="d",
            schema="public",
            groups={"g": {"tables": {t: privileges for t in tables}, "sequences": {}}},
            user_prefixes={"g": "v-g-"},
            vault_logins=["vault_1"],
            admin_user="admin",
        )

    both = declared(["SELECT"], ["t"]).union(declared(["SELECT", "INSERT"], ["t", "u"]))
    assert both.groups["g"]["tables"] == {"t": ["INSERT", "SELECT"], "u": ["INSERT", "SELECT"]}
    assert both.vault_logins == ["vault_1"] and both.admin_user == "admin"
