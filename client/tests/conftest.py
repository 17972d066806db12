import sys
from pathlib import Path

# The package from its folder, as the repository's tests use it (not installed).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
