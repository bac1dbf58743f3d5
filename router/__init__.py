"""bundle-router: route agent traffic to pinned bundle versions by weight."""

from __future__ import annotations

__version__ = "0.1.0"
