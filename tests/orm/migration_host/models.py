"""The example host's models: volumes (string keys) and their snapshots (integer keys)."""

from __future__ import annotations

from sqlalchemy import ForeignKey, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tasktoolkit.orm import NAMING_CONVENTION, TaskResource


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Volume(TaskResource, Base):
    __tablename__ = "volumes"
    __resource_type__ = "volume"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))


class Snapshot(TaskResource, Base):
    __tablename__ = "snapshots"
    __resource_type__ = "snapshot"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    volume_id: Mapped[str] = mapped_column(ForeignKey("volumes.id", ondelete="CASCADE"), index=True)
