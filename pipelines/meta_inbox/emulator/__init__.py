"""A local emulator of Meta's Graph API (Conversations API) serving a deterministic inbox."""

from .inbox import Activity, Inbox, generate_inbox
from .server import Call, Emulator, Faults, Limits, serve

__all__ = ["Activity", "Call", "Emulator", "Faults", "Inbox", "Limits", "generate_inbox", "serve"]
