"""Persistence: SQLite (a sync API and an ordered async queue). PostgreSQL comes later."""
