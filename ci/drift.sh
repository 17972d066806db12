#!/usr/bin/env bash
# What drift.yml runs on a schedule for one stack: the drift report (drift.py) of
# privileges beyond the settings, orphan logins and objects changed behind the
# stack's back. Read-only, as the preview identity: it changes nothing, and
# exits non-zero (failing the job) when it finds drift.
source "$(dirname "$0")/common.sh" --read-only
cd "$PGCREDS_REPO"
venv/bin/python drift.py --stack "$PGCREDS_STACK" --cwd "$PGCREDS_PROJECT"
