"""How the destination is asked which messages it holds: ids in time order, apart across the
widest gaps, so that each query is bounded by the times of its own ids; and which of DuckDB's
failures say that it ran out of memory, and which that the disk is full."""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from meta_inbox.destinations import problem_of, time_spans
from meta_inbox.errors import DestinationOutOfMemory, DestinationUnwritable

MONTH = timedelta(days=30)


def _at(*days: float) -> list[tuple[datetime, str]]:
    start = datetime(2026, 6, 1, tzinfo=UTC)
    return [(start + timedelta(days=day), f"m{index}") for index, day in enumerate(days)]


def test_an_old_message_is_asked_apart_from_this_weeks() -> None:
    timed = _at(-2900, -2899.5, -3, -2, -1, 0)

    assert time_spans(timed, 4, MONTH) == [timed[:2], timed[2:]]


def test_only_the_widest_gaps_cut_and_only_those_over_the_gap() -> None:
    timed = _at(-1000, -700, -400, -100, -60, -45, -1, 0)

    # Gaps of 300 days (three), 40, 15 and 44: three parts at most, cut at the widest three.
    assert time_spans(timed, 4, MONTH) == [timed[:1], timed[1:2], timed[2:3], timed[3:]]
    assert time_spans(timed, 2, MONTH) == [timed[:1], timed[1:]]
    assert time_spans(timed, 4, timedelta(days=400)) == [timed]


def test_no_ids_no_span() -> None:
    assert time_spans([], 4, MONTH) == []
    assert time_spans(_at(0), 4, MONTH) == [_at(0)]


@pytest.mark.parametrize(
    "error",
    [
        duckdb.OutOfMemoryException(
            "Out of Memory Error: failed to allocate data of size 2.0 MiB (6.8 MiB/7.6 MiB used)"
        ),
        duckdb.TransactionException(
            "TransactionContext Error: Failed to commit: could not allocate block of size 256.0 "
            "KiB (19.0 MiB/19.0 MiB used)"
        ),
        duckdb.FatalException(
            "FATAL Error: Failed to create checkpoint because of error: failed to pin block of "
            "size 256.0 KiB (22.7 MiB/22.8 MiB used)"
        ),
    ],
)
def test_duckdb_out_of_memory_in_a_load_a_commit_or_a_checkpoint(error: Exception) -> None:
    try:
        raise RuntimeError("Pipeline execution failed at `step=load`:\n" + str(error)) from error
    except RuntimeError as wrapped:
        problem = problem_of(wrapped, "duckdb")

    assert isinstance(problem, DestinationOutOfMemory)
    assert str(problem) == (
        f"DuckDB ran out of memory while loading ({error}): raise duckdb_memory_limit "
        "(SOURCES__META_INBOX__DUCKDB_MEMORY_LIMIT); what earlier checkpoints loaded is kept, "
        "and the next run goes on from there."
    )


FULL = "free space on it, or point DLT_DATA_DIR (dlt's pipeline folder) and the destination at"


@pytest.mark.parametrize(
    ("error", "quoted"),
    [
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "[Errno 28] "),
        (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), "[Errno 122] "),
        (
            duckdb.TransactionException(
                'TransactionContext Error: Failed to commit: Could not write file "x.wal": '
                + os.strerror(errno.ENOSPC)
            ),
            "TransactionContext Error: Failed to commit: Could not write file",
        ),
        (
            duckdb.FatalException(
                "FATAL Error: Failed to create checkpoint because of error: Could not write "
                'file "inbox.duckdb": ' + os.strerror(errno.ENOSPC)
            ),
            "FATAL Error: Failed to create checkpoint",
        ),
    ],
    ids=["ENOSPC", "EDQUOT", "DuckDB commit", "DuckDB checkpoint"],
)
def test_a_full_disk_is_told_as_such_not_as_memory(error: Exception, quoted: str) -> None:
    try:
        raise RuntimeError("Pipeline execution failed at `step=load`") from error
    except RuntimeError as wrapped:
        problem = problem_of(wrapped, "duckdb")

    assert isinstance(problem, DestinationUnwritable)
    first = str(error).splitlines()[0]
    assert first.startswith(quoted)
    assert str(problem) == (
        f"The disk is full ({first}): {FULL} a disk with room; what earlier checkpoints "
        "loaded is kept, and the next run goes on from there."
    )
