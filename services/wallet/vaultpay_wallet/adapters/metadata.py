"""The one SQLAlchemy `MetaData` of the wallet service.

Every table module of the wallet (wallets, PINs, limits, settings, IP trust, notifications)
registers its tables here, so Alembic's env and the tests see one schema.
"""

from __future__ import annotations

from sqlalchemy import MetaData

__all__ = ["metadata"]

metadata = MetaData()
