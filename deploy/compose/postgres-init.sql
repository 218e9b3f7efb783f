-- A sample application database for deploy/compose.yaml: rows in app.files point at
-- objects (a bare key on the local tier, s3://shelflife/objects/{key} once migrated).
-- Runs once, when the PostgreSQL volume is created. Point [databases.app] in
-- shelflife.toml at your own application's database instead.
CREATE DATABASE app OWNER shelflife;
\connect app shelflife
CREATE TABLE files (
    id bigserial PRIMARY KEY,
    path text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX files_path ON files (path);
