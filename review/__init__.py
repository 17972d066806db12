"""What a reviewer reads: access in plain words (access.py)."""
