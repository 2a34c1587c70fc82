-- The clock saga deadlines run on. Every timeout scan ticks it; a scan that finds the previous
-- tick too old (PostgreSQL was down, or no orchestrator ran) postpones every deadline by the gap,
-- so that time in which no worker could answer and no orchestrator could look does not use up a
-- step's attempts. One row.
CREATE TABLE saga_clock (
    id        boolean PRIMARY KEY DEFAULT true CHECK (id),
    ticked_at timestamptz NOT NULL DEFAULT now(),
    -- The tick before `ticked_at`: an UPDATE that sets both returns the gap in one statement.
    previous  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO saga_clock DEFAULT VALUES;
