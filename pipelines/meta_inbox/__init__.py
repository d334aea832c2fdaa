"""meta-inbox: Messenger and Instagram conversations of Facebook Pages, as dlt tables.

`export()` runs a whole export (checkpoints, metric views, run records), as `meta-inbox run`
does; `meta_inbox()` is the plain dlt source; `Settings` holds every setting.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Settings
    from .pipeline import ExportResult, export, make_pipeline, pages
    from .source import meta_inbox
    from .tables import TABLES

# The module of each name: imported when the name is first used, so that importing the package
# loads neither dlt nor pyarrow, and the CLI can choose the allocators first (`allocators`).
_HOMES = {
    "TABLES": "tables",
    "ExportResult": "pipeline",
    "Settings": "config",
    "export": "pipeline",
    "make_pipeline": "pipeline",
    "meta_inbox": "source",
    "pages": "pipeline",
}
__all__ = [
    "TABLES",
    "ExportResult",
    "Settings",
    "export",
    "make_pipeline",
    "meta_inbox",
    "pages",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
