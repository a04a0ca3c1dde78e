"""The host models the tests use: a small cluster -> node hierarchy with tasks.

Their resource types (``cluster``, ``node``) are distinct from the sample
app's (``network``, ``port``), since resource types are unique per process.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import ForeignKey, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tasktoolkit.orm import NAMING_CONVENTION, TaskResource, TaskRules


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def new_id() -> str:
    return str(uuid.uuid4())


class Cluster(TaskResource, Base):
    """A parent resource: deleting it deletes its nodes through the database."""

    __tablename__ = "clusters"
    __resource_type__ = "cluster"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), default="")
    project_id: Mapped[str | None] = mapped_column(String(64))


class Node(Base, TaskResource):
    """A child resource with an integer key (bases in the other order on purpose)."""

    __tablename__ = "nodes"
    __resource_type__ = "node"
    __task_rules__ = {
        "*": TaskRules(ttl_by_state={"failed": timedelta(days=7)}),
        "keep_forever": TaskRules(ttl=None),
        "one_at_a_time": TaskRules(exclusive=True),
    }

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64), default="")
    project_id: Mapped[str | None] = mapped_column(String(64))
