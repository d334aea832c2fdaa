"""The `meta-inbox` program as a process: what is settled before the libraries load, and the
exit. The commands themselves are in `cli`, which this imports only once that is done."""

from __future__ import annotations

import atexit
import contextlib
import importlib.abc
import os
import sys
import threading
from typing import Any, NoReturn


def entry() -> NoReturn:
    """The `meta-inbox` program: `cli.main`, then out without tearing the interpreter down.

    Freeing the modules and objects of dlt, pyarrow and DuckDB one at a time costs a run
    0.2-0.5 s of CPU after its work is done, for memory the kernel takes back at once. Only
    what exit owes others is done first: the exit handlers (logging's flush among them) and
    the standard streams. A thread still running (a load a second Ctrl-C left) is waited
    for, as Python's own exit does.
    """
    # `run` is the only command that takes no option before its name (`--version` is the
    # program's only one, and ends it).
    if sys.argv[1:2] == ["run"] and not _UNUSED_IN_A_RUN & sys.modules.keys():
        sys.meta_path.insert(0, _WithoutUnused())
    from .cli import main

    code = main()
    if any(
        not thread.daemon
        for thread in threading.enumerate()
        if thread is not threading.main_thread()
    ):
        sys.exit(code)
    atexit._run_exitfuncs()
    with contextlib.suppress(BrokenPipeError):  # the reader left (`| head`), as in `main`
        sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _WithoutUnused(importlib.abc.MetaPathFinder):
    """pandas and numpy, as if they were not installed. DuckDB imports pandas for every query
    with parameters (to tell DataFrames among them), and pyarrow to build arrays from lists:
    90 MB that a run never uses, a third of its memory at small sizes (measured). pyarrow
    imports numpy as it loads: 10 MB and 0.1 s of every run's start. pyarrow, DuckDB and dlt
    do without both, and remember that they did: so only a process that is a run, and nothing
    else, leaves them out."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name.partition(".")[0] in _UNUSED_IN_A_RUN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


_UNUSED_IN_A_RUN = {"pandas", "numpy"}
