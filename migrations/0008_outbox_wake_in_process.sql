-- The relays are woken in-process by the committing writer (and poll for the rest): the NOTIFY
-- per outbox insert made every outbox-writing transaction take PostgreSQL's database-wide notify
-- lock through its commit, so they committed one at a time.
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS outbox_notify();
