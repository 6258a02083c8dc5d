"""Alembic environment: always run with a connection handed in by kinema.store.db.migrate."""

from alembic import context

from kinema.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through kinema.store.db.migrate (or `kinema migrate`)")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
