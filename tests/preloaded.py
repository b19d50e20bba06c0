"""What a forked child of conftest's preloaded server runs: one of the repository's scripts as `python script.py`.

Kept apart from conftest so that a child imports only this (conftest imports pytest and the tiny-data helpers).
"""

from __future__ import annotations

import atexit
import os
import runpy
import sys


def run_as_main(script: str, flags: list[str], cwd: str, environ: dict[str, str], fresh_sys_path: list[str],
                stdout_path: str, stderr_path: str) -> None:
    """Run `script` as __main__ with a fresh interpreter's argv, sys.path, working directory and environment,
    its stdout and stderr going to the two files. multiprocessing turns its SystemExit or uncaught exception
    into the exit status as the interpreter would, and flushes both streams."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environ)
    for fd, path in ((1, stdout_path), (2, stderr_path)):
        file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(file, fd)
        os.close(file)
    sys.argv = [script, *flags]
    sys.path[:] = [os.path.dirname(script), *fresh_sys_path]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        atexit._run_exitfuncs()  # an interpreter's exit runs them; a multiprocessing child's does not
