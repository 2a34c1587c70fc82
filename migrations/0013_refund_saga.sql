-- Refunds: a second saga definition runs on the same engine, so an order has at most one saga of
-- each definition (its checkout, and perhaps its refund) instead of one saga in all.
ALTER TABLE sagas DROP CONSTRAINT sagas_order_id_key;
ALTER TABLE sagas ADD CONSTRAINT sagas_order_definition_key UNIQUE (order_id, definition);

-- REFUNDING while the refund saga runs; REFUNDED when it completed (a refused refund puts the
-- order back to CONFIRMED).
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED', 'REFUNDING', 'REFUNDED'));
