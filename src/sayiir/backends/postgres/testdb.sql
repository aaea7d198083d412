-- Statements of the test-database helper (_testdb.py, used by sayiir.testing.pytest_plugin):
-- a migrated template database built once per schema version, a fresh copy per test.
-- {db} and {template} are identifiers, composed with psycopg.sql.Identifier.

-- name: lock_templates
SELECT pg_advisory_lock(%(key)s);

-- name: unlock_templates
SELECT pg_advisory_unlock(%(key)s);

-- name: database_exists
SELECT 1 FROM pg_database WHERE datname = %(name)s;

-- name: create_database
CREATE DATABASE {db};

-- name: create_from_template
CREATE DATABASE {db} TEMPLATE {template};

-- name: rename_database
ALTER DATABASE {db} RENAME TO {template};

-- name: drop_database
DROP DATABASE IF EXISTS {db} WITH (FORCE);
