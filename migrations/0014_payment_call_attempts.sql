-- Which attempt at the provider the payment's next call is: part of its idempotency key. Stripe
-- replays the saved answer to a key, a server error included, so after a 5xx the next call must
-- be a new request (a new key); after a lost answer it stays the same request (the same key).
ALTER TABLE payments ADD COLUMN call_attempt integer NOT NULL DEFAULT 1;
