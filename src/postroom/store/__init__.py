"""Database access: opening SQLite with the durability settings postroom relies on, and schema migrations."""

from postroom.store.sqlite import open_database

__all__ = ["open_database"]
