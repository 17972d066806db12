"""A failed Pulumi command's reasons, in the program's own words: its `Diagnostics:`
section with each error once, tracebacks cut to their exception's message and
the engine's generic lines left out (`local/pulumi_run.py`, `deployer.fleet`)."""

from __future__ import annotations

import re

# The engine's own lines that say only that something else failed.
GENERIC = (
    "update failed",
    "preview failed",
    "destroy failed",
    "refresh failed",
    "Resource monitor has terminated, shutting down",
    "an unhandled error occurred: program exited with",
)
RESOURCE_HEADER = re.compile(r"^  (\S+) \((.+)\):$")
# The last line of a Python traceback: `module.Class: message`.
EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_][\w.]*\.)?([A-Z]\w*(?:Error|Exception|Kept|Refused|Protected|Unreachable|"
    r"Mismatch|Taken|InUse|Plan)?): (.*)$"
)


def diagnostics(lines: list[str]) -> list[tuple[str, list[str]]]:
    """(resource, error lines) of the `Diagnostics:` section, in order."""
    found: list[tuple[str, list[str]]] = []
    inside, resource, current = False, "", None
    for line in lines:
        if line.startswith("Diagnostics:"):
            inside = True
            continue
        if not inside:
            continue
        if line and not line.startswith(" "):  # the next section (Outputs:, Resources:)
            break
        header = RESOURCE_HEADER.match(line)
        if header:
            resource, current = header.group(2), None
            continue
        if line.startswith("    error: "):
            current = [line[len("    error: ") :]]
            found.append((resource, current))
        elif current is not None and line.startswith("    "):
            current.append(line[4:])
        elif not line.strip():
            current = None
    return found


def reason(error: list[str]) -> list[str]:
    """The error's own words: a traceback is cut to its exception's message (and the
    lines that continue it); a generic line is nothing."""
    if error[0].startswith("Traceback"):
        for index in range(len(error) - 1, 0, -1):
            line = error[index]
            matched = EXCEPTION_LINE.match(line) if not line.startswith(" ") else None
            if matched:
                return [matched.group(2), *error[index + 1 :]]
        return error[-1:]
    if any(error[0].startswith(generic) for generic in GENERIC):
        return []
    return error


def summary(output: str) -> list[str]:
    """The lines to end a failed command's output with (none if nothing was found)."""
    seen: set[str] = set()
    lines: list[str] = []
    for resource, error in diagnostics(output.splitlines()):
        words = [line.rstrip() for line in reason(error) if line.strip()]
        key = "\n".join(words)
        if not words or key in seen:
            continue
        seen.add(key)
        lines.append(f"  {resource}: {words[0]}")
        lines += [f"    {line}" for line in words[1:]]
    return lines
