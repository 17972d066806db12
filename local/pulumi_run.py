"""`pulumi <command> …` as `make` runs it: the output passes through unchanged, and
when the command fails, its last lines say why, in the program's own words.

A refusal the program makes on purpose (a setting, a login, a privilege only a
superuser may take back, a table that holds rows) reaches the user inside the
engine's diagnostics: a dynamic provider's refusal is wrapped in its Python
traceback, and the stack's outputs follow it. This prints, after all that, each
error once, without traceback frames or the engine's generic lines, so that the
end of `make`'s output is the reason and the fix.

    python local/pulumi_run.py up --stack dev --yes …     # exits as pulumi does
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clients.pulumi_output import summary


def run(arguments: Iterable[str]) -> int:
    process = subprocess.Popen(
        ["pulumi", *arguments], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    captured = []
    assert process.stdout is not None
    for line in process.stdout:
        sys.stdout.write(line)
        captured.append(line)
    code = process.wait()
    if code:
        lines = summary("".join(captured))
        if lines:
            print(f"\npulumi {next(iter(arguments), '')} stopped (exit {code}). Why, in the program's words:")
            print("\n".join(lines))
    return code


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
