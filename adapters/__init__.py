"""Thread-pool and DB-API adapters (a later issue)."""
