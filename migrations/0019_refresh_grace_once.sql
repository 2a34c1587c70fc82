-- The refresh grace window (REFRESH_REUSE_GRACE_MS) serves a spent token once more, and only while
-- its successor is unused: a second tab that refreshed at the same moment. The second reuse, or
-- one after the successor was spent, is a copied token and ends the session. Nullable, no default:
-- expand-only, the previous release ignores it.
ALTER TABLE refresh_tokens ADD COLUMN grace_used_at timestamptz;
