-- The vendors' part of the W3C trace context each message is published with (the `tracestate`
-- broker header, next to `traceparent`), so it reaches the consumers as the client sent it.
ALTER TABLE outbox ADD COLUMN tracestate text;
