"""The Vault policies in vault-policies/ are enough, and no more than needed:
a stack goes up and down with a token holding only deployer.hcl, and an
application token holding only its creds policy can read credentials and
nothing else."""

from __future__ import annotations

import hvac
import hvac.exceptions
import pytest

from stacks import REPO, ProgramStack, vault


def policy_for(stack: ProgramStack, file: str) -> str:
    return (REPO / "vault-policies" / file).read_text().replace("database", stack.mount).replace(
        "metrics-readwrite", stack.role_name)


def test_deployer_and_application_policies(new_stack: ProgramStack):
    root = vault()
    deployer_policy, app_policy = f"{new_stack.mount}-deployer", f"{new_stack.mount}-app"
    root.sys.create_or_update_policy(deployer_policy, policy_for(new_stack, "deployer.hcl"))
    root.sys.create_or_update_policy(app_policy, policy_for(new_stack, "app-metrics-readwrite.hcl"))
    try:
        deployer_token = root.auth.token.create(policies=[deployer_policy], ttl="10m")["auth"]["client_token"]
        app_token = root.auth.token.create(policies=[app_policy], ttl="10m")["auth"]["client_token"]
        workspace = new_stack.stack.workspace
        workspace.env_vars.update(VAULT_TOKEN=deployer_token, BAO_TOKEN=deployer_token)

        new_stack.stack.up()
        app = hvac.Client(url=root.url, token=app_token)
        secret = app.secrets.database.generate_credentials(new_stack.role_name, mount_point=new_stack.mount)
        assert secret["data"]["username"].startswith("v-token-")
        with pytest.raises(hvac.exceptions.Forbidden):
            app.secrets.database.read_connection("postgresql", mount_point=new_stack.mount)
        new_stack.stack.destroy()  # revokes the application's lease too, with the deployer token
        assert f"{new_stack.mount}/" not in root.sys.list_mounted_secrets_engines()["data"]
    finally:
        root.sys.delete_policy(deployer_policy)
        root.sys.delete_policy(app_policy)
