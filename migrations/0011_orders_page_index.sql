-- A buyer's orders are paged newest first by (created_at, id); the id breaks ties between orders
-- placed in the same microsecond, so the index carries it too.
CREATE INDEX IF NOT EXISTS orders_user_created_id ON orders (user_id, created_at DESC, id DESC);
DROP INDEX IF EXISTS orders_user_created;
