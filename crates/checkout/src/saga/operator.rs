//! Operator actions on sagas (retry, resume, force-compensate, force-complete), one at a time or
//! in bulk, each idempotent and written to the audit log in the transaction that applies it.
//! Finding sagas: filters and cursor pages.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::machine::{self, OperatorAction, SagaState};
use super::store::{self, SagaSummary};
use super::{SagaDefinition, Sagas};
use ecommerce_platform::error::AppError;

/// Who acts, from the operator's access token.
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: Uuid,
    pub email: String,
}

/// What an action did.
#[derive(Debug, Clone)]
pub struct Applied {
    pub saga: SagaSummary,
    /// `true` when this idempotency key had already been used on this saga: nothing was done now.
    pub replayed: bool,
}

fn state_json(s: &SagaState, step: Option<&str>) -> serde_json::Value {
    json!({
        "status": s.status.as_str(),
        "step": step,
        "attempt": s.attempt,
        "failureReason": s.failure_reason.map(|r| r.as_str()),
        "interrupted": s.interrupted.map(|i| i.as_str()),
        "lastError": s.last_error,
    })
}

/// Checks what every action takes: a reason to record and a key to make it idempotent.
pub fn validate(reason: &str, idempotency_key: &str) -> Result<(), AppError> {
    if reason.trim().is_empty() || reason.len() > 500 {
        return Err(AppError::bad_input("reason must be 1 to 500 characters"));
    }
    if idempotency_key.is_empty() || idempotency_key.len() > 100 {
        return Err(AppError::bad_input("idempotencyKey must be 1 to 100 characters"));
    }
    Ok(())
}

/// Applies `action` to one saga in one transaction: the transition (state, history, command via
/// the outbox, order outcome) and its audit record. The same `idempotency_key` on the same saga
/// returns the saga as it is and does nothing; on another action it is a `CONFLICT`.
pub async fn act(
    pool: &PgPool,
    sagas: &Sagas,
    saga_id: Uuid,
    action: OperatorAction,
    reason: &str,
    idempotency_key: &str,
    actor: &Actor,
) -> Result<Applied, AppError> {
    validate(reason, idempotency_key)?;
    let mut tx = pool.begin().await?;
    let Some(saga) = store::lock(&mut tx, saga_id).await? else {
        return Err(AppError::NotFound("saga"));
    };
    let earlier: Option<String> =
        sqlx::query_scalar("SELECT action FROM saga_audit WHERE saga_id = $1 AND idempotency_key = $2")
            .bind(saga_id)
            .bind(idempotency_key)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(earlier) = earlier {
        tx.commit().await?;
        if earlier != action.as_str() {
            return Err(AppError::Conflict(format!(
                "idempotencyKey was already used for {earlier} on this saga"
            )));
        }
        let saga = store::summary(pool, saga_id).await?.ok_or(AppError::NotFound("saga"))?;
        return Ok(Applied { saga, replayed: true });
    }
    let def = definition(sagas, &saga.definition)?;
    let t = machine::operate(def, &saga.state, action, reason).map_err(|r| AppError::Conflict(r.0))?;
    let step_name = |i: usize| def.steps.get(i).map(|s| s.name.as_str());
    let rows = store::apply(&mut tx, &saga, &t).await?;
    sqlx::query(
        "INSERT INTO saga_audit (saga_id, action, idempotency_key, actor_id, actor_email, reason, before, after)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(saga_id)
    .bind(action.as_str())
    .bind(idempotency_key)
    .bind(actor.id)
    .bind(&actor.email)
    .bind(reason)
    .bind(state_json(&saga.state, step_name(saga.state.step)))
    .bind(state_json(&t.state, step_name(t.state.step)))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    ecommerce_platform::postgres::outbox::committed(pool, rows);
    tracing::info!(%saga_id, action = action.as_str(), actor = %actor.email, reason, "operator action applied");
    let saga = store::summary(pool, saga_id).await?.ok_or(AppError::NotFound("saga"))?;
    Ok(Applied { saga, replayed: false })
}

fn definition<'a>(sagas: &'a Sagas, name: &str) -> Result<&'a SagaDefinition, AppError> {
    sagas
        .get(name)
        .ok_or_else(|| AppError::Internal(format!("saga definition {name} is unknown to this build")))
}

/// One audit record.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// Its place in the audit table (1, 2, 3, ... across every saga).
    pub id: i64,
    pub action: String,
    pub actor_email: String,
    pub reason: String,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// A saga's audit log, oldest first.
pub async fn audit(pool: &PgPool, saga_id: Uuid) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, action, actor_email, reason, before, after, at FROM saga_audit WHERE saga_id = $1 ORDER BY id",
    )
    .bind(saga_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                id: r.try_get("id")?,
                action: r.try_get("action")?,
                actor_email: r.try_get("actor_email")?,
                reason: r.try_get("reason")?,
                before: r.try_get("before")?,
                after: r.try_get("after")?,
                at: r.try_get("at")?,
            })
        })
        .collect()
}

/// Which sagas an operator is looking for. Every field narrows the set.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Sagas of this definition (`checkout`, `refund`).
    pub definition: Option<String>,
    pub status: Option<String>,
    /// Index of the step the saga is at (see the definition; set `definition` with it).
    pub step: Option<i32>,
    /// Case-insensitive text in the last error or the failure reason.
    pub error_contains: Option<String>,
    pub order_id: Option<Uuid>,
    /// Started more than this many minutes ago.
    pub older_than_minutes: Option<i32>,
    /// In the same state (no transition) for more than this many minutes.
    pub unchanged_for_minutes: Option<i32>,
}

impl Filter {
    /// Whether `saga` (as it is now) matches; the age filters need the database and are not
    /// checked here.
    pub fn matches(&self, saga: &SagaSummary) -> bool {
        let text = |t: &Option<String>| {
            let needle = self.error_contains.as_deref().unwrap_or_default().to_lowercase();
            t.as_deref().is_some_and(|t| t.to_lowercase().contains(&needle))
        };
        self.definition.as_deref().is_none_or(|d| d == saga.definition)
            && self.status.as_deref().is_none_or(|s| s == saga.status)
            && self.step.is_none_or(|s| s == saga.step)
            && self.order_id.is_none_or(|o| o == saga.order_id)
            && (self.error_contains.is_none() || text(&saga.last_error) || text(&saga.failure_reason))
    }
}

pub use crate::page::Cursor;

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

fn push_filter<'a>(q: &mut QueryBuilder<'a, Postgres>, f: &'a Filter) {
    q.push(" WHERE true");
    if let Some(d) = &f.definition {
        q.push(" AND definition = ").push_bind(d);
    }
    if let Some(s) = &f.status {
        q.push(" AND status = ").push_bind(s);
    }
    if let Some(step) = f.step {
        q.push(" AND step = ").push_bind(step);
    }
    if let Some(text) = &f.error_contains {
        let pattern = format!("%{}%", escape_like(text));
        q.push(" AND (last_error ILIKE ").push_bind(pattern.clone());
        q.push(" OR failure_reason ILIKE ").push_bind(pattern).push(")");
    }
    if let Some(order) = f.order_id {
        q.push(" AND order_id = ").push_bind(order);
    }
    if let Some(m) = f.older_than_minutes {
        q.push(" AND created_at < now() - ").push_bind(m).push(" * interval '1 minute'");
    }
    if let Some(m) = f.unchanged_for_minutes {
        q.push(" AND updated_at < now() - ").push_bind(m).push(" * interval '1 minute'");
    }
}

/// Up to `first` sagas matching `f`, newest first, after `after`; and whether more follow.
pub async fn find(
    pool: &PgPool,
    f: &Filter,
    first: i64,
    after: Option<Cursor>,
) -> Result<(Vec<SagaSummary>, bool), sqlx::Error> {
    let mut q = QueryBuilder::new(format!("SELECT {} FROM sagas", store::SUMMARY_COLUMNS));
    push_filter(&mut q, f);
    if let Some(c) = after {
        q.push(" AND (created_at, id) < (").push_bind(c.created_at).push(", ").push_bind(c.id).push(")");
    }
    q.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(first + 1);
    let rows = q.build().fetch_all(pool).await?;
    let mut sagas: Vec<SagaSummary> = rows.iter().map(store::row_to_summary).collect::<Result<_, _>>()?;
    let more = sagas.len() as i64 > first;
    sagas.truncate(first as usize);
    Ok((sagas, more))
}

/// How many sagas match `f`.
pub async fn count(pool: &PgPool, f: &Filter) -> Result<i64, sqlx::Error> {
    let mut q = QueryBuilder::new("SELECT count(*) FROM sagas");
    push_filter(&mut q, f);
    q.build_query_scalar().fetch_one(pool).await
}

/// The outcome of a bulk action.
#[derive(Debug, Clone, Default)]
pub struct BulkOutcome {
    /// Sagas matching the filter (at most [`BULK_LIMIT`] are considered).
    pub matched: usize,
    /// Of those, how many the action applies to in their current state.
    pub applicable: usize,
    /// Applied now (0 on a dry run).
    pub applied: usize,
    /// Sagas the action does not apply to, with why.
    pub refused: Vec<(Uuid, String)>,
}

/// Most sagas one bulk action touches; narrow the filter for more.
pub const BULK_LIMIT: i64 = 500;

/// Applies `action` to every saga matching `f` (or, with `dry_run`, only counts), each in its
/// own transaction with its own audit record, all under one idempotency key.
#[allow(clippy::too_many_arguments)]
pub async fn bulk(
    pool: &PgPool,
    sagas: &Sagas,
    f: &Filter,
    action: OperatorAction,
    reason: &str,
    idempotency_key: &str,
    actor: &Actor,
    dry_run: bool,
) -> Result<BulkOutcome, AppError> {
    validate(reason, idempotency_key)?;
    let mut q = QueryBuilder::new(
        "SELECT id, definition, status, step, attempt, failure_reason, interrupted_status, last_error FROM sagas",
    );
    push_filter(&mut q, f);
    q.push(" ORDER BY created_at LIMIT ").push_bind(BULK_LIMIT);
    let rows = q.build().fetch_all(pool).await?;
    let mut out = BulkOutcome { matched: rows.len(), ..Default::default() };
    for r in &rows {
        let id: Uuid = r.try_get("id")?;
        let state = store::state_from_row(r)?;
        let def = definition(sagas, &r.try_get::<String, _>("definition")?)?;
        if let Err(refusal) = machine::operate(def, &state, action, reason) {
            out.refused.push((id, refusal.0));
            continue;
        }
        out.applicable += 1;
        if dry_run {
            continue;
        }
        match act(pool, sagas, id, action, reason, idempotency_key, actor).await {
            Ok(a) if !a.replayed => out.applied += 1,
            Ok(_) => {}
            // The saga moved on since it was read: report it like any other refusal.
            Err(AppError::Conflict(why)) => {
                out.applicable -= 1;
                out.refused.push((id, why));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in ["", "!!!", "bm90LWEtY3Vyc29y"] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn live_filters_match_like_the_query() {
        let now = Utc::now();
        let saga = SagaSummary {
            id: Uuid::now_v7(),
            definition: "checkout".into(),
            order_id: Uuid::now_v7(),
            status: "NEEDS_ATTENTION".into(),
            step: 1,
            failure_reason: None,
            event_count: 4,
            created_at: now,
            updated_at: now,
            attempt: 3,
            interrupted: Some("RUNNING".into()),
            last_error: Some("AUTHORIZE_PAYMENT got no reply after 3 attempts".into()),
        };
        assert!(Filter::default().matches(&saga));
        let f = |f: Filter| f.matches(&saga);
        assert!(f(Filter { status: Some("NEEDS_ATTENTION".into()), step: Some(1), ..Default::default() }));
        assert!(f(Filter { error_contains: Some("No Reply".into()), ..Default::default() }));
        assert!(!f(Filter { error_contains: Some("declined".into()), ..Default::default() }));
        assert!(!f(Filter { status: Some("RUNNING".into()), ..Default::default() }));
        assert!(!f(Filter { order_id: Some(Uuid::nil()), ..Default::default() }));
        assert!(f(Filter { definition: Some("checkout".into()), step: Some(1), ..Default::default() }));
        assert!(!f(Filter { definition: Some("refund".into()), ..Default::default() }));
    }

    #[test]
    fn search_text_is_literal() {
        assert_eq!(escape_like("50%_off\\"), "50\\%\\_off\\\\");
    }

    #[test]
    fn actions_need_a_reason_and_a_key() {
        assert!(validate("gateway recovered", "k1").is_ok());
        assert!(validate("  ", "k1").is_err());
        assert!(validate("ok", "").is_err());
        assert!(validate(&"x".repeat(501), "k").is_err());
    }
}
