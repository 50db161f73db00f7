"""Durable local storage: Maildir sinks (fsync before rename) and SQLite state."""
