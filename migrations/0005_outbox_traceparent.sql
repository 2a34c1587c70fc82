-- The W3C trace context each message is published with (as the `traceparent` broker header).
ALTER TABLE outbox ADD COLUMN traceparent text;
