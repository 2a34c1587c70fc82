-- Sagas that ran out of retries wait in NEEDS_ATTENTION; these say what was interrupted
-- (RUNNING or COMPENSATING) and what went wrong.
ALTER TABLE sagas ADD COLUMN interrupted_status text, ADD COLUMN last_error text;
-- Operators look sagas up by status and by how long they have been in it.
CREATE INDEX sagas_status_updated ON sagas (status, updated_at);

-- A retried command waits in the outbox until its backoff has passed.
ALTER TABLE outbox ADD COLUMN available_at timestamptz NOT NULL DEFAULT now();

-- Every operator action on a saga: who, when, why, and the saga before and after. The key makes
-- an action idempotent: the same key on the same saga is applied once.
CREATE TABLE saga_audit (
    id              bigserial PRIMARY KEY,
    saga_id         uuid NOT NULL REFERENCES sagas (id),
    action          text NOT NULL,
    idempotency_key text NOT NULL,
    actor_id        uuid NOT NULL,
    actor_email     text NOT NULL,
    reason          text NOT NULL,
    before          jsonb NOT NULL,
    after           jsonb NOT NULL,
    at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT saga_audit_key UNIQUE (saga_id, idempotency_key)
);
CREATE INDEX saga_audit_saga ON saga_audit (saga_id, at);
