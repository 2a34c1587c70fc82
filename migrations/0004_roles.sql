-- Roles an account holds, e.g. `operator` for the saga monitor and operator queries.
-- A role counts only while it is both in the access token and still here, so removing it takes
-- effect on the account's next request.
ALTER TABLE users ADD COLUMN roles text[] NOT NULL DEFAULT '{}';

-- The monitor lists the newest sagas first.
CREATE INDEX sagas_created ON sagas (created_at DESC);
-- Operator change streams read sagas changed since a moment. (Transitions already change the
-- indexed `deadline`, so this index costs no HOT updates that were possible before.)
CREATE INDEX sagas_updated ON sagas (updated_at);
