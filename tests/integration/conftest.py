# Registers the integration fixtures (defined with their helpers in stacks.py).
from stacks import deployed_stack, local_servers, new_stack, stand_in  # noqa: F401
