"""meta-inbox: Messenger and Instagram conversations of Facebook Pages, as dlt tables.

`export()` runs a whole export (checkpoints, metric views, run records), as `meta-inbox run`
does; `meta_inbox()` is the plain dlt source; `Settings` holds every setting.
"""

from .config import Settings
from .pipeline import ExportResult, export, make_pipeline, pages
from .source import meta_inbox
from .tables import TABLES

__all__ = [
    "TABLES",
    "ExportResult",
    "Settings",
    "export",
    "make_pipeline",
    "meta_inbox",
    "pages",
]
