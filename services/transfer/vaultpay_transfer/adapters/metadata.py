"""The one SQLAlchemy `MetaData` of the transfer service (its tables register here)."""

from __future__ import annotations

from sqlalchemy import MetaData

__all__ = ["metadata"]

metadata = MetaData()
