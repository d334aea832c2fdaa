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

Importing this module is what sets them, so the CLI imports it before anything else of
meta-inbox's; a process that has already loaded the libraries, or that sets the variables
itself, keeps its own choice.
"""

import os

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
os.environ.setdefault("DUCKDB_JE_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")
