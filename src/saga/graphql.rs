//! Sagas in GraphQL: the `Saga` type (an order's saga for its owner, any saga for operators), and
//! the operator-only queries and change stream behind the monitor page.

use async_graphql::{Context, Object, Result, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use uuid::Uuid;

use super::store::{self, SagaEventRow, SagaSummary};
use crate::error::AppError;
use crate::graphql::{gql, operator, state};
use crate::order::graphql::OrderStatusGql;

/// One entry of a saga's history.
#[derive(SimpleObject)]
#[graphql(name = "SagaEvent")]
pub struct SagaEventGql {
    /// 1, 2, 3, ... in the order the saga recorded them.
    pub sequence: i32,
    /// `ORDER_PLACED`, `STOCK_RESERVED`, ..., `COMPLETED` or `COMPENSATED`.
    #[graphql(name = "type")]
    pub kind: String,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

impl From<SagaEventRow> for SagaEventGql {
    fn from(e: SagaEventRow) -> Self {
        SagaEventGql { sequence: e.seq, kind: e.kind, detail: e.detail, at: e.created_at }
    }
}

pub struct SagaGql(pub SagaSummary);

#[Object(name = "Saga")]
impl SagaGql {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn order_id(&self) -> ID {
        ID(self.0.order_id.to_string())
    }
    /// `RUNNING`, `COMPENSATING`, `COMPLETED` or `COMPENSATED`.
    async fn status(&self) -> &str {
        &self.0.status
    }
    /// The order's status as the saga leaves it: `PENDING` while it runs or compensates, then
    /// `CONFIRMED` or `CANCELLED` (the saga's last transition writes both in one transaction).
    async fn order_status(&self) -> OrderStatusGql {
        match super::SagaStatus::parse(&self.0.status) {
            Some(super::SagaStatus::Completed) => OrderStatusGql::Confirmed,
            Some(super::SagaStatus::Compensated) => OrderStatusGql::Cancelled,
            _ => OrderStatusGql::Pending,
        }
    }
    /// The step the saga is at, or compensated from: `RESERVE_STOCK`, `AUTHORIZE_PAYMENT`,
    /// `CAPTURE_PAYMENT`; `DONE` once completed.
    async fn step(&self, ctx: &Context<'_>) -> &'static str {
        if self.0.status == super::SagaStatus::Completed.as_str() {
            return "DONE";
        }
        let steps = &state(ctx).saga.steps;
        usize::try_from(self.0.step).ok().and_then(|i| steps.get(i)).map_or("DONE", |s| s.name)
    }
    /// Why the saga compensated: `OUT_OF_STOCK`, `PAYMENT_DECLINED`, `PAYMENT_TIMEOUT`, ...
    async fn failure_reason(&self) -> Option<&str> {
        self.0.failure_reason.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When the saga last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// Events recorded so far.
    async fn event_count(&self) -> i32 {
        self.0.event_count
    }
    /// The step history, oldest first.
    async fn events(&self, ctx: &Context<'_>) -> Result<Vec<SagaEventGql>> {
        let events = store::events_after(&state(ctx).pool, self.0.id, 0).await.map_err(|e| gql(e.into()))?;
        Ok(events.into_iter().map(Into::into).collect())
    }
}

fn parse_saga_id(id: &ID) -> Result<Uuid> {
    id.parse::<Uuid>().map_err(|_| gql(AppError::bad_input("not a valid saga id")))
}

fn check_status(status: &Option<String>) -> Result<()> {
    match status.as_deref() {
        None => Ok(()),
        Some(s) if super::SagaStatus::parse(s).is_some() => Ok(()),
        Some(_) => {
            Err(gql(AppError::bad_input("status must be RUNNING, COMPENSATING, COMPLETED or COMPENSATED")))
        }
    }
}

#[derive(Default)]
pub struct SagaQuery;

#[Object]
impl SagaQuery {
    /// Operators only: the newest sagas of every user (1 to 100), optionally with one status;
    /// costs `first` times its selection in query complexity.
    #[graphql(complexity = "first.clamp(1, 100) as usize * child_complexity")]
    async fn recent_sagas(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: i32,
        status: Option<String>,
    ) -> Result<Vec<SagaGql>> {
        operator(ctx)?;
        if !(1..=100).contains(&first) {
            return Err(gql(AppError::bad_input("first must be between 1 and 100")));
        }
        check_status(&status)?;
        let sagas = store::recent(&state(ctx).pool, first as i64, status.as_deref())
            .await
            .map_err(|e| gql(e.into()))?;
        Ok(sagas.into_iter().map(SagaGql).collect())
    }

    /// Operators only: any saga by id.
    async fn saga(&self, ctx: &Context<'_>, id: ID) -> Result<SagaGql> {
        operator(ctx)?;
        let id = parse_saga_id(&id)?;
        let saga = store::summary(&state(ctx).pool, id).await.map_err(|e| gql(e.into()))?;
        saga.map(SagaGql).ok_or_else(|| gql(AppError::NotFound("saga")))
    }
}

#[derive(Default)]
pub struct SagaSubscription;

#[Subscription]
impl SagaSubscription {
    /// Operators only: every saga as it changes from now on, whichever API instance or process
    /// changed it; optionally only changes into `status`. A saga changing several times within
    /// a moment may be reported once, in its latest state.
    async fn saga_changes(
        &self,
        ctx: &Context<'_>,
        status: Option<String>,
    ) -> Result<impl Stream<Item = Result<SagaGql>>> {
        operator(ctx)?;
        check_status(&status)?;
        Ok(state(ctx).feed.changes(status).map(|r| r.map(SagaGql).map_err(|e| gql(e.into()))))
    }
}
