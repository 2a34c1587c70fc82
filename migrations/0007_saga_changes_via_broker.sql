-- Live subscriptions now learn of saga changes from the broker (a SagaChanged message per
-- transition, written through the outbox), so the per-event NOTIFY is no longer needed.
DROP TRIGGER IF EXISTS saga_events_notify ON saga_events;
DROP FUNCTION IF EXISTS notify_saga_event();
