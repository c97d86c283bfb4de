"""Alembic environment: used by `arena db upgrade` and by the `alembic` command alike."""

from __future__ import annotations

import os

from alembic import context

from arena.db import make_engine, metadata, normalize_url

config = context.config
url = config.get_main_option("sqlalchemy.url") or normalize_url(
    os.environ.get("ARENA_DATABASE_URL", "sqlite:///arena.db")
)


def run_offline() -> None:
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
