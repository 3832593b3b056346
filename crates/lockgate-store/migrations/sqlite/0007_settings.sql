-- Facts the server keeps about its own data, by name: the check value that tells whether the secret
-- key in use is the one the stored secrets were encrypted with, and which one-time upgrades ran.
CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
