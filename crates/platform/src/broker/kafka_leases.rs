//! Kafka partitions shared through PostgreSQL instead of the broker's consumer groups
//! (`KAFKA_OFFSETS=postgres`).
//!
//! Each instance of a consumer is a member (`kafka_members`, renewed every [`HEARTBEAT`], alive
//! for [`TTL`]). Every heartbeat it renews the leases it holds on partitions (`kafka_partitions`),
//! gives back those above its fair share (the partitions divided by the live members, rounded
//! up), and takes free or expired ones up to it (`SKIP LOCKED`, so two instances never take the
//! same one). An instance that dies stops renewing: its partitions are free once its leases
//! expire, and the others take them on their next heartbeat. Each partition's next offset is kept
//! in the same row and only moves forward; an instance starts a partition there. Nothing waits on
//! the broker's group coordinator, which is what made restarted consumers stall on tansu.

use std::time::Duration;

use sqlx::{PgPool, Row};
use uuid::Uuid;

/// How often an instance renews its membership and leases, and rebalances.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a lease or membership lasts without renewal: a dead instance's partitions are taken
/// over within this and a heartbeat.
pub const TTL: Duration = Duration::from_secs(5);

/// How many partitions each of `members` live instances should hold at most.
pub fn fair_share(partitions: i32, members: i64) -> usize {
    let members = members.max(1) as usize;
    (partitions.max(0) as usize).div_ceil(members)
}

pub struct Leases {
    pool: PgPool,
    /// The namespaced consumer name.
    consumer: String,
    topic: String,
    partitions: i32,
    me: Uuid,
}

impl Leases {
    pub fn new(pool: PgPool, consumer: String, topic: String, partitions: i32) -> Self {
        Leases { pool, consumer, topic, partitions, me: Uuid::new_v4() }
    }

    /// Makes sure every partition has its row.
    pub async fn join(&self) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO kafka_partitions (consumer, topic, partition)
             SELECT $1, $2, p FROM generate_series(0, $3 - 1) AS p ON CONFLICT DO NOTHING",
        )
        .bind(&self.consumer)
        .bind(&self.topic)
        .bind(self.partitions)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// One heartbeat: renews this instance and its leases, gives back what is above its share and
    /// takes what it is short of. Returns the partitions it holds now, with their next offsets.
    pub async fn beat(&self) -> Result<Vec<(i32, Option<i64>)>, sqlx::Error> {
        let ttl = TTL.as_secs_f64();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO kafka_members (consumer, topic, member, alive_until)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))
             ON CONFLICT (consumer, topic, member) DO UPDATE SET alive_until = EXCLUDED.alive_until",
        )
        .bind(&self.consumer)
        .bind(&self.topic)
        .bind(self.me)
        .bind(ttl)
        .execute(&mut *tx)
        .await?;
        let members: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM kafka_members WHERE consumer = $1 AND topic = $2 AND alive_until > now()",
        )
        .bind(&self.consumer)
        .bind(&self.topic)
        .fetch_one(&mut *tx)
        .await?;
        let held = rows(
            sqlx::query(
                "UPDATE kafka_partitions SET lease_until = now() + make_interval(secs => $4)
                  WHERE consumer = $1 AND topic = $2 AND holder = $3
                 RETURNING partition, next_offset",
            )
            .bind(&self.consumer)
            .bind(&self.topic)
            .bind(self.me)
            .bind(ttl)
            .fetch_all(&mut *tx)
            .await?,
        );
        let fair = fair_share(self.partitions, members);
        let held = if held.len() > fair {
            let extra: Vec<i32> = held[fair..].iter().map(|(p, _)| *p).collect();
            sqlx::query(
                "UPDATE kafka_partitions SET holder = NULL, lease_until = NULL
                  WHERE consumer = $1 AND topic = $2 AND holder = $3 AND partition = ANY($4)",
            )
            .bind(&self.consumer)
            .bind(&self.topic)
            .bind(self.me)
            .bind(&extra)
            .execute(&mut *tx)
            .await?;
            held[..fair].to_vec()
        } else if held.len() < fair {
            let taken = rows(
                sqlx::query(
                    "UPDATE kafka_partitions k SET holder = $3, lease_until = now() + make_interval(secs => $4)
                       FROM (SELECT partition FROM kafka_partitions
                              WHERE consumer = $1 AND topic = $2 AND (holder IS NULL OR lease_until < now())
                              ORDER BY partition LIMIT $5 FOR UPDATE SKIP LOCKED) AS free
                      WHERE k.consumer = $1 AND k.topic = $2 AND k.partition = free.partition
                     RETURNING k.partition, k.next_offset",
                )
                .bind(&self.consumer)
                .bind(&self.topic)
                .bind(self.me)
                .bind(ttl)
                .bind((fair - held.len()) as i64)
                .fetch_all(&mut *tx)
                .await?,
            );
            let mut all = held;
            all.extend(taken);
            all.sort_unstable();
            all
        } else {
            held
        };
        tx.commit().await?;
        Ok(held)
    }

    /// Records finished offsets of the partitions this instance holds: each one's next offset
    /// moves forward, never back. An instance that lost a partition stores nothing for it (the
    /// holder that took it reads from the stored offset and finishes what is after it).
    pub async fn save(&self, offsets: &[(i32, i64)]) -> Result<(), sqlx::Error> {
        let (partitions, next): (Vec<i32>, Vec<i64>) = offsets.iter().copied().unzip();
        sqlx::query(
            "UPDATE kafka_partitions k SET next_offset = GREATEST(coalesce(k.next_offset, 0), u.next)
               FROM unnest($3::int[], $4::bigint[]) AS u(partition, next)
              WHERE k.consumer = $1 AND k.topic = $2 AND k.partition = u.partition AND k.holder = $5",
        )
        .bind(&self.consumer)
        .bind(&self.topic)
        .bind(&partitions)
        .bind(&next)
        .bind(self.me)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives every lease back and leaves, so the others take the partitions at once.
    pub async fn leave(&self) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE kafka_partitions SET holder = NULL, lease_until = NULL
              WHERE consumer = $1 AND topic = $2 AND holder = $3",
        )
        .bind(&self.consumer)
        .bind(&self.topic)
        .bind(self.me)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM kafka_members WHERE consumer = $1 AND topic = $2 AND member = $3")
            .bind(&self.consumer)
            .bind(&self.topic)
            .bind(self.me)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
}

fn rows(rows: Vec<sqlx::postgres::PgRow>) -> Vec<(i32, Option<i64>)> {
    let mut out: Vec<(i32, Option<i64>)> =
        rows.iter().map(|r| (r.get::<i32, _>("partition"), r.get::<Option<i64>, _>("next_offset"))).collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::fair_share;

    #[test]
    fn partitions_are_shared_rounding_up_so_every_partition_has_a_taker() {
        assert_eq!(fair_share(3, 1), 3);
        assert_eq!(fair_share(3, 2), 2);
        assert_eq!(fair_share(3, 3), 1);
        assert_eq!(fair_share(3, 5), 1, "more instances than partitions: some hold none");
        assert_eq!(fair_share(3, 0), 3, "counted before its own membership: alone");
        for members in 1..=6 {
            assert!(fair_share(3, members) * members as usize >= 3);
        }
    }
}
