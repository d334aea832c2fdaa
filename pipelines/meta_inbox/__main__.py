"""`python -m meta_inbox`: the `meta-inbox` program."""

from .program import entry

entry()
