"""Learning themes from NHS incidents, complaints and claims."""

from __future__ import annotations

__version__ = "0.1.0"
