"""Storage backends: one small protocol, three implementations (memory, SQLite, PostgreSQL)."""
