-- Kafka consumers without the broker's consumer groups (KAFKA_OFFSETS=postgres): the instances of
-- one consumer split a topic's partitions through leases here, renewed every second and taken
-- over once expired, and keep each partition's next offset here instead of in the broker.
-- `consumer` is the namespaced consumer name (`<BROKER_NAMESPACE>.<consumer>`).
CREATE TABLE kafka_partitions (
    consumer    text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    -- The offset to read next; NULL: from the beginning.
    next_offset bigint,
    holder      uuid,
    lease_until timestamptz,
    PRIMARY KEY (consumer, topic, partition)
);

-- The live instances of each consumer: the partitions are shared among them.
CREATE TABLE kafka_members (
    consumer    text NOT NULL,
    topic       text NOT NULL,
    member      uuid NOT NULL,
    alive_until timestamptz NOT NULL,
    PRIMARY KEY (consumer, topic, member)
);
