-- A session's refresh tokens follow from one another: the successor of token T is
-- HMAC-SHA256(refresh_secret, T). Two tabs that refresh with the same token at the same moment
-- both get the same successor (within REFRESH_REUSE_GRACE_MS of the first use); later, a reuse
-- still ends the session. Only the client ever holds a token, and the secret alone derives none.
-- Sessions from before have no secret: their tokens stay random, without the grace window.
ALTER TABLE sessions ADD COLUMN refresh_secret bytea;
