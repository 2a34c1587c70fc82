-- no-transaction
-- The finished sagas whose history is still kept, oldest first (for the retention task). Built
-- CONCURRENTLY, so writes to sagas go on meanwhile; that cannot run in a transaction, so this
-- file holds this one statement. If a build is interrupted it leaves an INVALID index behind:
-- drop it (`DROP INDEX CONCURRENTLY sagas_history_to_delete`) and migrate again.
CREATE INDEX CONCURRENTLY IF NOT EXISTS sagas_history_to_delete ON sagas (updated_at)
    WHERE history_deleted_at IS NULL AND status IN ('COMPLETED', 'COMPENSATED');
