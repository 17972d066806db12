"""Hosts the package's component for the engine (PulumiPlugin.yaml): its schema is
read from the component's type annotations."""

import sys
from pathlib import Path

# The program's modules (components/, providers/, settings.py ...) are the repository's.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi.provider.experimental import component_provider_host

from components.application_database import ApplicationDatabase

if __name__ == "__main__":
    component_provider_host([ApplicationDatabase], name="pgcreds", version="0.1.0")
