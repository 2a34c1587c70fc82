-- Events a payment provider sent to a webhook, each recorded once: a redelivered event (providers
-- deliver at least once) finds its id here and changes nothing.
CREATE TABLE webhook_events (
    provider    text NOT NULL,
    event_id    text NOT NULL,
    kind        text NOT NULL,
    order_id    uuid,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);
CREATE INDEX webhook_events_order ON webhook_events (order_id) WHERE order_id IS NOT NULL;

-- The payment worker calls the provider for an order under a lease: a second delivery of the
-- same command (a duplicate, a retry) that finds the lease held does not call again, so two
-- calls never race at a provider that does not honour idempotency keys.
ALTER TABLE payments ADD COLUMN call_until timestamptz;
