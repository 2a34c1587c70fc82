-- Finished sagas' histories (saga_events) are deleted SAGA_HISTORY_RETENTION_DAYS after the saga
-- finished; the saga row stays and says when its history went. Expand only: a nullable column
-- without a default (no table rewrite, a brief lock); the previous release ignores it. Its index
-- is built in the next migration, without blocking writes.
ALTER TABLE sagas ADD COLUMN history_deleted_at timestamptz;
