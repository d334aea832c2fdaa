"""The allocators of Arrow and DuckDB: chosen by a `meta-inbox` process, left alone in one that
imports meta-inbox as a library. Each case is a fresh interpreter, since both libraries read
their settings as they load."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

BACKEND = "import pyarrow; print(pyarrow.default_memory_pool().backend_name)"
ALLOCATOR_SETTINGS = (
    "ARROW_DEFAULT_MEMORY_POOL",
    "DUCKDB_JE_MALLOC_CONF",
    "MALLOC_MMAP_THRESHOLD_",
    "GLIBC_TUNABLES",
)
# What the process's environment says as DuckDB loads.
DUCKDB_SETTING = "import os, duckdb; print(os.environ.get('DUCKDB_JE_MALLOC_CONF'))"


def _run(code: str, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_SETTINGS}
    result = subprocess.run(
        [sys.executable, "-c", code], env=environment | env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_cli_chooses_the_system_allocator_before_pyarrow_loads() -> None:
    assert _run(f"import meta_inbox.cli; {BACKEND}") == "system"


def test_the_cli_has_duckdb_give_freed_pages_back() -> None:
    assert _run(f"import meta_inbox.cli; {DUCKDB_SETTING}") == ("dirty_decay_ms:0,muzzy_decay_ms:0")


def test_a_choice_of_the_users_is_kept() -> None:
    assert _run(f"import meta_inbox.cli; {BACKEND}", ARROW_DEFAULT_MEMORY_POOL="jemalloc") == (
        "jemalloc"
    )
    assert _run(
        f"import meta_inbox.cli; {DUCKDB_SETTING}", DUCKDB_JE_MALLOC_CONF="dirty_decay_ms:5000"
    ) == ("dirty_decay_ms:5000")


@pytest.mark.parametrize("name", ["export", "meta_inbox", "Settings", "TABLES"])
def test_the_package_loads_its_modules_when_a_name_is_used(name: str) -> None:
    code = (
        "import sys, meta_inbox; loaded = 'pyarrow' in sys.modules or 'dlt' in sys.modules; "
        f"from meta_inbox import {name}; {BACKEND.replace('print(', 'print(loaded, ')}"
    )
    loaded, backend = _run(code).split()

    assert loaded == "False"
    assert backend != "system"
    assert _run(f"import meta_inbox; from meta_inbox import {name}; {DUCKDB_SETTING}") == "None"


# Whether a 1 MB block, asked after a 4 MB one was freed, is mapped for itself: glibc's default
# threshold has risen to 4 MB by then, and the block comes out of its arenas.
MAPPED = """
import ctypes
FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS.split()]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Info
freed = bytearray(4 << 20)
del freed
before = mallinfo2().hblkhd
block = bytearray(1 << 20)
print(mallinfo2().hblkhd - before >= 1 << 20)
"""
GLIBC = sys.platform == "linux" and os.confstr("CS_GNU_LIBC_VERSION") is not None


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_the_cli_has_glibc_map_large_blocks_for_themselves() -> None:
    assert _run(f"import meta_inbox.cli\n{MAPPED}") == "True"
    assert _run(MAPPED) == "False"  # glibc's own way, what a library user keeps
    assert _run(f"import meta_inbox\n{MAPPED}") == "False"
    assert _run(f"import meta_inbox.cli\n{MAPPED}", MALLOC_MMAP_THRESHOLD_="8388608") == "False"
