-- Accounts and signing keys -------------------------------------------------------------------
CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_key UNIQUE (email)
);

-- Ed25519 signing keys. Every API instance reads them from here, so all agree on the JWKS.
-- A key verifies until `retire_after`; rotation sets it on the old key to now() + token TTL.
CREATE TABLE signing_keys (
    kid          text PRIMARY KEY,
    private_seed bytea NOT NULL,
    public_x     text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    retire_after timestamptz
);

-- Stock (the stock service's tables) ------------------------------------------------------------
CREATE TABLE stock (
    sku       text PRIMARY KEY,
    available integer NOT NULL CHECK (available >= 0)
);

-- One row per order the stock service has seen. A ReleaseStock that arrives before its
-- ReserveStock leaves a RELEASED tombstone, so the late reservation is refused.
CREATE TABLE stock_reservations (
    order_id   uuid PRIMARY KEY,
    status     text NOT NULL CHECK (status IN ('RESERVED', 'REJECTED', 'RELEASED')),
    reason     text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE stock_reservation_lines (
    order_id uuid NOT NULL REFERENCES stock_reservations (order_id),
    sku      text NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);

-- Orders ------------------------------------------------------------------------------------------
CREATE TABLE orders (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id),
    status          text NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED')),
    total_minor     bigint NOT NULL CHECK (total_minor >= 0),
    currency        text NOT NULL,
    idempotency_key text NOT NULL,
    cancel_reason   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT orders_user_idempotency_key UNIQUE (user_id, idempotency_key)
);
CREATE INDEX orders_user_created ON orders (user_id, created_at DESC);

CREATE TABLE order_lines (
    order_id         uuid NOT NULL REFERENCES orders (id),
    line_no          integer NOT NULL,
    sku              text NOT NULL,
    quantity         integer NOT NULL CHECK (quantity > 0),
    unit_price_minor bigint NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (order_id, line_no)
);

-- Payments (the payment service's table) ----------------------------------------------------------
-- PENDING while the gateway is asked; a VoidPayment that finds no row or a PENDING one leaves VOIDED,
-- so an authorization that completes later is voided instead of kept.
CREATE TABLE payments (
    order_id     uuid PRIMARY KEY,
    status       text NOT NULL CHECK (status IN ('PENDING', 'AUTHORIZED', 'DECLINED', 'CAPTURED', 'VOIDED', 'REFUNDED')),
    amount_minor bigint NOT NULL,
    currency     text NOT NULL,
    gateway_ref  text,
    reason       text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Sagas -------------------------------------------------------------------------------------------
CREATE TABLE sagas (
    id             uuid PRIMARY KEY,
    order_id       uuid NOT NULL UNIQUE REFERENCES orders (id),
    user_id        uuid NOT NULL,
    definition     text NOT NULL,
    status         text NOT NULL,
    step           integer NOT NULL,
    attempt        integer NOT NULL,
    failure_reason text,
    deadline       timestamptz,
    payload        jsonb NOT NULL,
    trace_id       text NOT NULL,
    event_count    integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
-- The timeout scanner looks only at sagas that are waiting.
CREATE INDEX sagas_deadline ON sagas (deadline) WHERE deadline IS NOT NULL;

CREATE TABLE saga_events (
    saga_id    uuid NOT NULL REFERENCES sagas (id),
    seq        integer NOT NULL,
    kind       text NOT NULL,
    detail     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga_id, seq)
);

-- Wakes subscription streams on every API instance connected to this database.
CREATE FUNCTION notify_saga_event() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('saga_events', NEW.saga_id::text);
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER saga_events_notify AFTER INSERT ON saga_events
    FOR EACH ROW EXECUTE FUNCTION notify_saga_event();

-- Messaging ---------------------------------------------------------------------------------------
-- Written in the same transaction as the state change it announces; the relay publishes and deletes.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    message_id  uuid NOT NULL UNIQUE,
    topic       text NOT NULL,
    key         text NOT NULL,
    payload     bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per (consumer, message) handled; written in the handler's transaction.
CREATE TABLE inbox (
    consumer     text NOT NULL,
    message_id   uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
