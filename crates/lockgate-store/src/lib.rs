//! Every SQL statement of Lockgate: SQLite by default, PostgreSQL for scale, with migrations.
