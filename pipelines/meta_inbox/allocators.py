"""The allocators of a `meta-inbox` process, chosen before pyarrow and DuckDB load: both read
their settings from the environment once, as they load.

Arrow's: the system allocator. pyarrow picks its allocator (mimalloc in its wheels) from
`ARROW_DEFAULT_MEMORY_POOL`; `pyarrow.set_memory_pool` moves only what Python asks of Arrow, not
what Arrow's C++ allocates for itself (the Parquet writer that dlt opens per table among it).
mimalloc keeps what is freed: measured at 1M messages, the system allocator cut the peak of a
backfill and of a run with nothing new by 36 MB each, at the same CPU.

DuckDB's: its jemalloc (`DUCKDB_JE_MALLOC_CONF`) gives freed pages back at once. DuckDB's own
setting keeps them for a while and, without background threads, until its next allocations
purge them, so the pages of one load's queries were still held when the next load peaked:
measured, a backfill of 126k messages peaked at 311 MB instead of 367 MB, at the same CPU
(DuckDB's `memory_limit` counts its buffers, not what its allocator keeps).

glibc's malloc, for everything else: blocks from 128 kB up are mapped for themselves and given
back when freed. Its default threshold rises to the largest block freed so far (up to 32 MB),
after which Graph's answers (2 MB at 100 threads) and Arrow's column buffers are carved out of
the arenas of the threads that asked for them, and the space freed around what is still in use
stays with the process: measured at 1M messages, 150 MB of free space held in glibc's arenas
at the end of each slice's reading, 75 MB with the threshold fixed.

Importing this module is what sets them, so the CLI imports it before anything else of
meta-inbox's; a process that has already loaded the libraries, or that sets the variables
itself, keeps its own choice.
"""

import ctypes
import os
import sys

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
os.environ.setdefault("DUCKDB_JE_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")

_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_GLIBC_SET = "MALLOC_MMAP_THRESHOLD_" in os.environ or "mmap_threshold" in os.environ.get(
    "GLIBC_TUNABLES", ""
)
if sys.platform == "linux" and not _GLIBC_SET:
    try:
        _mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a C library without mallopt (musl)
        pass
    else:
        _mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
