//! The `payments` table: one row per order, the payment worker's business-level idempotency
//! record; and `payment_releases`, what the provider holds that must be let go. Every status change is a compare-and-set from the status the worker read, so two
//! deliveries (or a void racing an authorization) cannot both win.

use sqlx::PgExecutor;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString, strum::EnumIter)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    /// An authorization was asked for; its outcome is not recorded yet.
    Pending,
    Authorized,
    Declined,
    Captured,
    /// The authorization was voided, or a void came first and left a tombstone.
    Voided,
    /// The capture was refunded.
    Refunded,
}

impl PaymentStatus {
    /// The name stored in `payments.status` (derived).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub status: PaymentStatus,
    pub amount_minor: i64,
    pub gateway_ref: Option<String>,
    pub reason: Option<String>,
    /// The attempt the next call to the provider belongs to (see [`next_call_attempt`]).
    pub call_attempt: u32,
}

/// Writes a PENDING payment before asking the gateway; `false` when the order has a payment
/// already (a retried command, or a void's tombstone).
pub async fn insert_pending<'e>(
    db: impl PgExecutor<'e>,
    order_id: Uuid,
    amount_minor: i64,
    currency: &str,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query!(
        "INSERT INTO payments (order_id, status, amount_minor, currency) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
        order_id,
        PaymentStatus::Pending.as_str(),
        amount_minor,
        currency,
    )
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Leaves a VOIDED tombstone for an order with no payment yet, so an authorization arriving
/// later is voided instead of kept; `false` when the order has a payment.
pub async fn insert_void_tombstone<'e>(db: impl PgExecutor<'e>, order_id: Uuid) -> Result<bool, sqlx::Error> {
    let r = sqlx::query!(
        "INSERT INTO payments (order_id, status, amount_minor, reason) VALUES ($1, $2, 0, 'voided before authorized')
         ON CONFLICT DO NOTHING",
        order_id,
        PaymentStatus::Voided.as_str(),
    )
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn load<'e>(db: impl PgExecutor<'e>, order_id: Uuid) -> Result<Option<Payment>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT status, amount_minor, gateway_ref, reason, call_attempt FROM payments WHERE order_id = $1",
        order_id
    )
    .fetch_optional(db)
    .await?;
    row.map(|r| {
        Ok(Payment {
            status: r
                .status
                .parse()
                .map_err(|_| sqlx::Error::Decode(format!("unknown payment status {}", r.status).into()))?,
            amount_minor: r.amount_minor,
            gateway_ref: r.gateway_ref,
            reason: r.reason,
            call_attempt: r.call_attempt.max(1) as u32,
        })
    })
    .transpose()
}

/// Moves the payment from `from` to `to`, recording the gateway's reference and a reason when
/// given; `false` when it is no longer in `from`.
pub async fn transition<'e>(
    db: impl PgExecutor<'e>,
    order_id: Uuid,
    from: PaymentStatus,
    to: PaymentStatus,
    gateway_ref: Option<&str>,
    reason: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query!(
        "UPDATE payments SET status = $3, gateway_ref = COALESCE($4, gateway_ref),
             reason = COALESCE($5, reason), call_until = NULL, updated_at = now()
         WHERE order_id = $1 AND status = $2",
        order_id,
        from.as_str(),
        to.as_str(),
        gateway_ref,
        reason,
    )
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Takes the lease to call the provider for the order's payment while it is in `status`, for
/// `lease`: the attempt the call belongs to, or `None` when another delivery holds it (or the
/// payment moved on).
pub async fn lease_call<'e>(
    db: impl PgExecutor<'e>,
    order_id: Uuid,
    status: PaymentStatus,
    lease: std::time::Duration,
) -> Result<Option<u32>, sqlx::Error> {
    let attempt = sqlx::query_scalar!(
        "UPDATE payments SET call_until = now() + make_interval(secs => $3)
         WHERE order_id = $1 AND status = $2 AND (call_until IS NULL OR call_until < now())
         RETURNING call_attempt",
        order_id,
        status.as_str(),
        lease.as_secs_f64(),
    )
    .fetch_optional(db)
    .await?;
    Ok(attempt.map(|a| a.max(1) as u32))
}

/// The provider failed while carrying out the last call and would replay that failure to its
/// idempotency key: the next call is a new attempt, with a new key.
pub async fn next_call_attempt<'e>(db: impl PgExecutor<'e>, order_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!("UPDATE payments SET call_attempt = call_attempt + 1 WHERE order_id = $1", order_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Gives the lease back (the call ended without an outcome to record).
pub async fn release_call<'e>(db: impl PgExecutor<'e>, order_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!("UPDATE payments SET call_until = NULL WHERE order_id = $1", order_id).execute(db).await?;
    Ok(())
}

/// The amount and currency the order's payment is for, if it has a payment row.
pub async fn amount_of<'e>(
    db: impl PgExecutor<'e>,
    order_id: Uuid,
) -> Result<Option<(i64, String)>, sqlx::Error> {
    sqlx::query_as("SELECT amount_minor, currency FROM payments WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(db)
        .await
}

/// Asks the payment workers to release what the provider holds under `reference` (once per
/// reference).
pub async fn request_release<'e>(
    db: impl PgExecutor<'e>,
    order_id: Uuid,
    reference: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO payment_releases (reference, order_id, reason) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(reference)
    .bind(order_id)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(())
}

/// Takes up to `limit` releases that are due, each for `lease` (another worker takes it over
/// after that, should this one die): `(order_id, reference)`.
pub async fn take_releases<'e>(
    db: impl PgExecutor<'e>,
    limit: i64,
    lease: std::time::Duration,
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE payment_releases SET release_after = now() + $2 * interval '1 millisecond'
          WHERE reference IN (SELECT reference FROM payment_releases
                               WHERE released_at IS NULL AND release_after <= now()
                               ORDER BY release_after LIMIT $1 FOR UPDATE SKIP LOCKED)
          RETURNING order_id, reference",
    )
    .bind(limit)
    .bind(lease.as_millis() as f64)
    .fetch_all(db)
    .await
}

/// The provider let go of `reference`.
pub async fn released<'e>(db: impl PgExecutor<'e>, reference: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE payment_releases SET released_at = now() WHERE reference = $1")
        .bind(reference)
        .execute(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::PaymentStatus;
    use strum::IntoEnumIterator;

    /// The names are the ones the table's CHECK constraint allows (migrations/0001_init.sql).
    #[test]
    fn statuses_are_the_tables() {
        let names: Vec<&str> = PaymentStatus::iter().map(PaymentStatus::as_str).collect();
        assert_eq!(names, ["PENDING", "AUTHORIZED", "DECLINED", "CAPTURED", "VOIDED", "REFUNDED"]);
        let schema = include_str!("../../../../migrations/0001_init.sql");
        let check = schema.lines().find(|l| l.contains("status IN ('PENDING', 'AUTHORIZED'")).unwrap();
        for name in names {
            assert!(check.contains(&format!("'{name}'")), "{name} is not in the payments CHECK");
        }
    }
}
