"""What every benchmark does at its edges: its inputs checked before any timing, each fault one line naming it and
a non-zero exit; Ctrl-C ending it with one line and exit status 130 (128 + SIGINT, as a shell reports it)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def check_choices(flag: str, values: list[str], allowed) -> None:
    """Exit with one line if a value of a list flag is not one of `allowed`."""
    for value in values:
        if value not in allowed:
            sys.exit(f"error: {flag} {value} is not one of {', '.join(allowed)}")


def check_revision(flag: str, revision: str, paths: tuple[str, ...]) -> str:
    """The commit `revision` names in this repository, checked to hold every file of `paths`; otherwise exit with
    one line naming the flag and the fault."""
    try:
        found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"], cwd=ROOT,
                               capture_output=True, text=True)
    except OSError as exc:
        sys.exit(f"error: {flag} {revision}: git cannot be run here ({exc.strerror})")
    if found.returncode != 0 or not found.stdout.strip():
        sys.exit(f"error: {flag} {revision}: not a commit of this repository ({ROOT})")
    commit = found.stdout.strip()
    for path in paths:
        if subprocess.run(["git", "cat-file", "-e", f"{commit}:{path}"], cwd=ROOT, capture_output=True).returncode:
            sys.exit(f"error: {flag} {revision}: that commit has no {path}")
    return commit


def run_main(main: Callable, args) -> None:
    """main(args), with Ctrl-C (SIGINT) ending it with one line instead of a traceback: the rows printed so far
    stand (every row is flushed as it is done)."""
    try:
        main(args)
    except KeyboardInterrupt:
        sys.stdout.flush()
        print("interrupted; rows so far printed above", file=sys.stderr, flush=True)
        sys.exit(130)
