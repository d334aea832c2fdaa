"""meta-inbox: Messenger and Instagram conversations of Facebook Pages, as dlt tables."""

from .source import RunReport, meta_inbox
from .tables import TABLES

__all__ = ["TABLES", "RunReport", "meta_inbox"]
