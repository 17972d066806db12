import sys
from pathlib import Path

# The program's modules (settings, components, providers) live at the repository root.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# pgcreds-client, from its folder (an application installs it: `pip install ./client`).
sys.path.insert(0, str(REPO / "client"))
