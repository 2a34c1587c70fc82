//! Sagas in GraphQL: the `Saga` type (an order's saga for its owner, any saga for operators), and
//! the operator-only queries and change stream behind the monitor page.

use async_graphql::connection::{Edge, EmptyFields, PageInfo};
use async_graphql::{Context, Object, Result, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use uuid::Uuid;

use ecommerce_checkout::saga::definition::OrderEnd;
use ecommerce_checkout::saga::machine::OperatorAction;
use ecommerce_checkout::saga::operator as ops;
use ecommerce_checkout::saga::store::{self, SagaEventRow, SagaSummary};
use ecommerce_checkout::saga::{
    definition, EventKind, FailureReason, SagaDefinition, SagaStatus, Sagas, Step,
};
use ecommerce_platform::error::AppError;

use super::context::{operator, state, OperatorOnly};
use super::loader::{OrderLoader, SagaEventsLoader, SagaLoader};
use super::node::{saga_uuid, NodeId};
use super::order::OrderGql;
use super::types::OrderStatusGql;
use async_graphql::dataloader::DataLoader;

pub struct SagaEventGql {
    row: SagaEventRow,
    kind: EventKind,
    order_id: Uuid,
}

impl SagaEventGql {
    /// An event of a saga of order `order_id`; a kind this build does not know is `INTERNAL`.
    pub fn new(row: SagaEventRow, order_id: Uuid) -> Result<Self> {
        let kind = known(&row.kind, EventKind::parse, "saga event type")?;
        Ok(SagaEventGql { row, kind, order_id })
    }
}

/// One entry of a saga's history, linked to the saga and the order it changed.
#[Object(name = "SagaEvent")]
impl SagaEventGql {
    /// A global id for caches (the saga's and the sequence's; `node(id:)` does not fetch events:
    /// their saga's `events` does).
    async fn id(&self) -> ID {
        NodeId::SagaEvent(self.row.saga_id, self.row.seq).encode()
    }
    /// 1, 2, 3, ... in the order the saga recorded them.
    async fn sequence(&self) -> i32 {
        self.row.seq
    }
    /// What happened.
    #[graphql(name = "type")]
    async fn kind(&self) -> EventKind {
        self.kind
    }
    /// Operators only (`null` for buyers): more about it, when there is more: the provider's words
    /// on a refusal, the step that timed out, an operator's reason. A buyer's client shows `type`
    /// and the order's `cancelReason`.
    async fn detail(&self, ctx: &Context<'_>) -> Option<&str> {
        is_operator(ctx).then_some(self.row.detail.as_deref()).flatten()
    }
    /// When it was recorded.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at
    }
    /// When it was recorded.
    #[graphql(deprecation = "Use createdAt, the name every other time of creation has in this API.")]
    async fn at(&self) -> DateTime<Utc> {
        self.row.created_at
    }
    /// The saga that recorded it, as it is now: a normalized cache updates the saga's status
    /// and step with each event it receives.
    async fn saga(&self, ctx: &Context<'_>) -> Result<SagaGql> {
        let saga = ctx
            .data_unchecked::<DataLoader<SagaLoader>>()
            .load_one(self.row.saga_id)
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?
            .ok_or_else(|| AppError::Internal(format!("saga {} of an event is gone", self.row.saga_id)))?;
        Ok(SagaGql(saga))
    }
    /// The order it changed, as it is now (its `status`, `cancelReason`, ...): a normalized
    /// cache updates the order with each event. `null` when it is not the caller's order (an
    /// operator following someone else's saga).
    async fn order(&self, ctx: &Context<'_>) -> Result<Option<OrderGql>> {
        let Ok(me) = super::context::user(ctx) else { return Ok(None) };
        let order = ctx
            .data_unchecked::<DataLoader<OrderLoader>>()
            .load_one((me.id, self.order_id))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?;
        Ok(order.map(OrderGql))
    }
}

/// Whether the caller holds the operator role (a buyer, or nobody signed in, does not).
pub(super) fn is_operator(ctx: &Context<'_>) -> bool {
    super::context::user(ctx).is_ok_and(|u| u.has(crate::auth::Role::Operator))
}

/// A stored name this build does not know is a fault of the server's data, reported as
/// `INTERNAL`: never guessed, never taken for another value.
pub(super) fn known<T>(value: &str, parse: fn(&str) -> Option<T>, what: &str) -> Result<T> {
    parse(value).ok_or_else(|| AppError::Internal(format!("unknown {what} {value:?} in the database")).into())
}

/// Which saga: what it does to its order.
#[derive(async_graphql::Enum, Copy, Clone, PartialEq, Eq)]
#[graphql(name = "SagaType")]
pub enum SagaTypeGql {
    /// Reserves stock, authorizes and captures the payment, confirms the order (`placeOrder`).
    Checkout,
    /// Refunds the payment, returns the stock, marks the order `REFUNDED` (`requestRefund`).
    Refund,
}

impl SagaTypeGql {
    /// The definition's name, as stored with each saga.
    pub fn definition(self) -> &'static str {
        match self {
            SagaTypeGql::Checkout => definition::CHECKOUT,
            SagaTypeGql::Refund => definition::REFUND,
        }
    }
}

/// What a saga's order is once the saga is in `status`.
fn order_status(def: &SagaDefinition, status: Option<SagaStatus>) -> OrderStatusGql {
    let end = |e: OrderEnd| match e {
        OrderEnd::Confirmed | OrderEnd::StaysConfirmed => OrderStatusGql::Confirmed,
        OrderEnd::Cancelled => OrderStatusGql::Cancelled,
        OrderEnd::Refunded => OrderStatusGql::Refunded,
    };
    match status {
        Some(SagaStatus::Completed) => end(def.completed.order),
        Some(SagaStatus::Compensated) => end(def.compensated.order),
        _ if def.name == definition::REFUND => OrderStatusGql::Refunding,
        _ => OrderStatusGql::Pending,
    }
}

pub struct SagaGql(pub SagaSummary);

impl SagaGql {
    fn definition<'a>(&self, ctx: &Context<'a>) -> Result<&'a SagaDefinition> {
        state(ctx).sagas.get(&self.0.definition).ok_or_else(|| {
            AppError::Internal(format!("unknown saga definition {:?} in the database", self.0.definition))
                .into()
        })
    }
}

/// An order's checkout or refund: the steps it ran, where it is, and what undid what when
/// something failed.
#[Object(name = "Saga")]
impl SagaGql {
    /// The saga's global id.
    pub(crate) async fn id(&self) -> ID {
        NodeId::Saga(self.0.id).encode()
    }
    /// The saga's id in logs and traces (a UUID).
    async fn database_id(&self) -> String {
        self.0.id.to_string()
    }
    /// The order it checks out.
    async fn order_id(&self) -> ID {
        NodeId::Order(self.0.order_id).encode()
    }
    /// Its order's id in logs, traces, receipts and support requests (a UUID).
    async fn order_database_id(&self) -> String {
        self.0.order_id.to_string()
    }
    /// Which saga this is: the order's checkout or its refund.
    #[graphql(name = "type")]
    async fn kind(&self) -> Result<SagaTypeGql> {
        match self.0.definition.as_str() {
            definition::CHECKOUT => Ok(SagaTypeGql::Checkout),
            definition::REFUND => Ok(SagaTypeGql::Refund),
            other => {
                Err(AppError::Internal(format!("unknown saga definition {other:?} in the database")).into())
            }
        }
    }
    /// Where the saga is.
    async fn status(&self) -> Result<SagaStatus> {
        known(&self.0.status, SagaStatus::parse, "saga status")
    }
    /// The order's status as the saga leaves it. Checkout: `PENDING` while it runs or
    /// compensates, then `CONFIRMED` or `CANCELLED`. Refund: `REFUNDING`, then `REFUNDED` or
    /// (refused) `CONFIRMED`. The saga's last transition writes both in one transaction.
    async fn order_status(&self, ctx: &Context<'_>) -> Result<OrderStatusGql> {
        Ok(order_status(self.definition(ctx)?, SagaStatus::parse(&self.0.status)))
    }
    /// The step the saga is at (running, paused) or undoing (compensating); `null` once it has
    /// finished.
    async fn step(&self, ctx: &Context<'_>) -> Result<Option<Step>> {
        if SagaStatus::parse(&self.0.status).is_some_and(|s| s.is_terminal()) {
            return Ok(None);
        }
        let steps = &self.definition(ctx)?.steps;
        Ok(usize::try_from(self.0.step).ok().and_then(|i| steps.get(i)).map(|s| s.name))
    }
    /// Why the saga compensated; `null` while nothing failed.
    async fn failure_reason(&self) -> Result<Option<FailureReason>> {
        self.0.failure_reason.as_deref().map(|r| known(r, FailureReason::parse, "failure reason")).transpose()
    }
    /// When the order was placed and the saga started.
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
    /// Attempt of the command in flight (1-based).
    async fn attempt(&self) -> i32 {
        self.0.attempt
    }
    /// Operators only (`null` for buyers): while `NEEDS_ATTENTION`, what went wrong (e.g.
    /// `CAPTURE_PAYMENT got no reply after 3 attempts`).
    async fn last_error(&self, ctx: &Context<'_>) -> Option<&str> {
        is_operator(ctx).then_some(self.0.last_error.as_deref()).flatten()
    }
    /// Operators only (`null` for buyers): what happens next, or what an operator can do; `null`
    /// once finished.
    async fn next_action(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        if !is_operator(ctx) {
            return Ok(None);
        }
        Ok(next_action(self.definition(ctx)?, &self.0))
    }
    /// Operators only: every operator action on this saga, oldest first.
    #[graphql(guard = "OperatorOnly")]
    async fn audit_log(&self, ctx: &Context<'_>) -> Result<Vec<AuditEntryGql>> {
        let entries = ops::audit(&state(ctx).pool, self.0.id).await.map_err(AppError::from)?;
        Ok(entries.into_iter().map(AuditEntryGql).collect())
    }
    /// The step history, oldest first.
    // Batched: a page of sagas reads all their events in one query.
    async fn events(&self, ctx: &Context<'_>) -> Result<Vec<SagaEventGql>> {
        let events = ctx
            .data_unchecked::<DataLoader<SagaEventsLoader>>()
            .load_one(self.0.id)
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?
            .unwrap_or_default();
        events.into_iter().map(|e| SagaEventGql::new(e, self.0.order_id)).collect()
    }
}

/// The next step in words, for people.
fn next_action(def: &SagaDefinition, s: &SagaSummary) -> Option<String> {
    let step = usize::try_from(s.step).ok().and_then(|i| def.steps.get(i));
    let name = step.map_or("?", |st| st.name.as_str());
    let compensation = step.and_then(|st| st.compensation).map_or("?", |c| c.as_str());
    match SagaStatus::parse(&s.status)? {
        SagaStatus::Running => Some(format!(
            "waiting for the reply to {name} (attempt {}); when attempts run out it {}",
            s.attempt,
            match step.map(|st| st.on_exhausted) {
                Some(definition::OnExhausted::NeedsAttention) => "stops for an operator",
                _ => "compensates",
            }
        )),
        SagaStatus::Compensating => {
            Some(format!("waiting for {compensation} to undo {name} (attempt {})", s.attempt))
        }
        SagaStatus::NeedsAttention if s.interrupted.as_deref() == Some("COMPENSATING") => Some(format!(
            "operator: retrySagaStep sends {compensation} again; resumeSaga if {name} was undone by hand"
        )),
        SagaStatus::NeedsAttention if def.past_pivot(s.step as usize + 1) => Some(format!(
            "operator: retrySagaStep sends {name} again; resumeSaga if it took effect; \
             forceCompleteSaga finishes the saga (what is done cannot be undone)"
        )),
        SagaStatus::NeedsAttention => Some(format!(
            "operator: retrySagaStep sends {name} again; resumeSaga if it took effect; \
             forceCompensateSaga undoes the order; forceCompleteSaga confirms it"
        )),
        SagaStatus::Completed | SagaStatus::Compensated => None,
    }
}

pub struct AuditEntryGql(ops::AuditEntry);

/// One operator action in a saga's audit log.
#[Object(name = "SagaAuditEntry")]
impl AuditEntryGql {
    /// A global id for caches (`node(id:)` does not fetch audit entries: their saga's `auditLog`
    /// does).
    async fn id(&self) -> ID {
        NodeId::SagaAuditEntry(self.0.id).encode()
    }
    /// What the operator did.
    async fn action(&self) -> Result<OperatorAction> {
        known(&self.0.action, |a| a.parse().ok(), "operator action")
    }
    /// The operator's e-mail.
    async fn actor(&self) -> &str {
        &self.0.actor_email
    }
    /// Why, in the operator's words.
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    /// The saga before the action: status, step, attempt, failureReason, interrupted, lastError.
    async fn before(&self) -> async_graphql::Json<serde_json::Value> {
        async_graphql::Json(self.0.before.clone())
    }
    /// The saga after the action, with the same fields.
    async fn after(&self) -> async_graphql::Json<serde_json::Value> {
        async_graphql::Json(self.0.after.clone())
    }
    /// When the action was taken.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// When the action was taken.
    #[graphql(deprecation = "Use createdAt, the name every other time of creation has in this API.")]
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
}

/// The saga an id names; a malformed id names none, like an absent one (`NOT_FOUND`).
fn parse_saga_id(id: &ID) -> Result<Uuid> {
    saga_uuid(id).ok_or_else(|| async_graphql::Error::from(AppError::NotFound("saga")))
}

#[derive(Default)]
pub struct SagaQuery;

#[Object]
impl SagaQuery {
    /// Operators only: the newest sagas of every user (1 to 100), optionally with one status;
    /// costs `first` times its selection in query complexity.
    #[graphql(
        guard = "OperatorOnly",
        complexity = "first.clamp(1, 100) as usize * child_complexity",
        deprecation = "Use sagas(filter: { status }, first:), a connection like every other list."
    )]
    async fn recent_sagas(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50, validator(minimum = 1, maximum = 100), desc = "How many (1 to 100).")] first: i32,
        #[graphql(desc = "Only sagas in this status.")] status: Option<SagaStatus>,
    ) -> Result<Vec<SagaGql>> {
        let sagas = store::recent(&state(ctx).pool, first as i64, status.map(SagaStatus::as_str))
            .await
            .map_err(AppError::from)?;
        Ok(sagas.into_iter().map(SagaGql).collect())
    }

    /// Operators only: sagas matching `filter`, newest first, a page of `first` (0 to 100, like
    /// every connection) after the cursor `after`; e.g. `{ status: NEEDS_ATTENTION }` or
    /// `{ unchangedForMinutes: 10 }`.
    #[graphql(guard = "OperatorOnly", complexity = "first.clamp(0, 100) as usize * child_complexity")]
    async fn sagas(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which sagas; all when absent.")] filter: Option<SagaFilterInput>,
        #[graphql(default = 20, validator(minimum = 0, maximum = 100), desc = "Page size (0 to 100).")] first: i32,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> Result<SagaConnection> {
        let s = state(ctx);
        let f = filter.unwrap_or_default().to_filter(&s.sagas)?;
        let after = match after {
            None => None,
            Some(c) => Some(ops::Cursor::decode(&c).ok_or(AppError::bad_input("after is not a cursor"))?),
        };
        let (sagas, more) = ops::find(&s.pool, &f, first as i64, after).await.map_err(AppError::from)?;
        let total = ops::count(&s.pool, &f).await.map_err(AppError::from)?;
        let edges: Vec<_> = sagas
            .into_iter()
            .map(|saga| {
                let cursor = ops::Cursor { created_at: saga.created_at, id: saga.id }.encode();
                Edge::new(cursor, SagaGql(saga))
            })
            .collect();
        let page_info = PageInfo {
            has_previous_page: after.is_some(),
            has_next_page: more,
            start_cursor: edges.first().map(|e| e.cursor.clone()),
            end_cursor: edges.last().map(|e| e.cursor.clone()),
        };
        Ok(SagaConnection { page_info, edges, total_count: total })
    }

    /// Operators only: any saga by id; `null` when there is none.
    #[graphql(guard = "OperatorOnly")]
    async fn saga(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The saga's id.")] id: ID,
    ) -> Result<Option<SagaGql>> {
        let Some(id) = saga_uuid(&id) else {
            return Ok(None);
        };
        let saga = store::summary(&state(ctx).pool, id).await.map_err(AppError::from)?;
        Ok(saga.map(SagaGql))
    }
}

#[derive(Default)]
pub struct SagaSubscription;

#[Subscription]
impl SagaSubscription {
    /// Operators only: every saga as it changes from now on, whichever API instance or process
    /// changed it; only changes into `status`, and only sagas matching `filter` (status, step,
    /// errorContains, orderId; the minute filters do not apply to live changes). A saga changing
    /// several times within a moment may be reported once, in its latest state.
    #[graphql(guard = "OperatorOnly")]
    async fn saga_changes(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only changes into this status.")] status: Option<SagaStatus>,
        #[graphql(desc = "Only sagas matching this (not the minute filters).")] filter: Option<
            SagaFilterInput,
        >,
    ) -> Result<impl Stream<Item = Result<SagaGql>>> {
        let s = state(ctx);
        let mut filter = filter.unwrap_or_default();
        if filter.older_than_minutes.is_some() || filter.unchanged_for_minutes.is_some() {
            return Err(AppError::bad_input("the minute filters do not apply to live changes").into());
        }
        if status.is_some() {
            if filter.status.is_some() && filter.status != status {
                return Err(AppError::bad_input("status and filter.status differ").into());
            }
            filter.status = status;
        }
        let f = filter.to_filter(&s.sagas)?;
        Ok(s.feed.changes(f).map(|r| r.map(SagaGql).map_err(|e| AppError::from(e).into())))
    }
}

/// Which sagas to list or repair; every field narrows the set.
#[derive(async_graphql::InputObject, Default)]
#[graphql(name = "SagaFilter")]
pub struct SagaFilterInput {
    /// Sagas of this type.
    #[graphql(name = "type")]
    pub kind: Option<SagaTypeGql>,
    /// Sagas in this status.
    pub status: Option<SagaStatus>,
    /// Sagas at (or undoing) this step.
    pub step: Option<Step>,
    /// Text in the last error or the failure reason (case-insensitive).
    pub error_contains: Option<String>,
    /// The saga of this order.
    pub order_id: Option<ID>,
    /// Started more than this many minutes ago.
    pub older_than_minutes: Option<i32>,
    /// In the same state for more than this many minutes (stuck).
    pub unchanged_for_minutes: Option<i32>,
}

impl SagaFilterInput {
    fn is_empty(&self) -> bool {
        self.kind.is_none()
            && self.status.is_none()
            && self.step.is_none()
            && self.error_contains.is_none()
            && self.order_id.is_none()
            && self.older_than_minutes.is_none()
            && self.unchanged_for_minutes.is_none()
    }

    fn to_filter(&self, sagas: &Sagas) -> Result<ops::Filter> {
        let mut definition = self.kind.map(|k| k.definition().to_string());
        let step = match self.step {
            None => None,
            Some(name) => {
                // A step belongs to one saga: filtering by it narrows to that saga's type.
                let (def, i) = sagas.locate(name).ok_or_else(|| {
                    AppError::Internal(format!("step {} is not in any saga", name.as_str()))
                })?;
                if definition.as_deref().is_some_and(|d| d != def.name) {
                    return Err(AppError::bad_input(format!(
                        "step {} is not a step of the {} saga",
                        name.as_str(),
                        definition.unwrap_or_default()
                    ))
                    .into());
                }
                definition = Some(def.name.to_string());
                Some(i as i32)
            }
        };
        for minutes in [self.older_than_minutes, self.unchanged_for_minutes].into_iter().flatten() {
            if !(0..=525_600).contains(&minutes) {
                return Err(AppError::bad_input("minutes must be between 0 and 525600").into());
            }
        }
        if self.error_contains.as_ref().is_some_and(|t| t.is_empty() || t.len() > 200) {
            return Err(AppError::bad_input("errorContains must be 1 to 200 characters").into());
        }
        let order_id = match &self.order_id {
            None => None,
            Some(id) => Some(
                super::node::order_uuid(id)
                    .ok_or_else(|| async_graphql::Error::from(AppError::bad_input("not a valid order id")))?,
            ),
        };
        Ok(ops::Filter {
            definition,
            status: self.status.map(|s| s.as_str().to_string()),
            step,
            error_contains: self.error_contains.clone(),
            order_id,
            older_than_minutes: self.older_than_minutes,
            unchanged_for_minutes: self.unchanged_for_minutes,
        })
    }
}

/// What an operator's repair did.
#[derive(SimpleObject)]
pub struct SagaActionResult {
    /// The saga after the action.
    pub saga: SagaGql,
    /// `true` when this idempotency key had been used on this saga before: nothing was done now.
    pub replayed: bool,
}

/// A saga a bulk repair left alone.
#[derive(SimpleObject)]
pub struct BulkRefusal {
    /// The saga's id.
    pub saga_id: ID,
    /// Why the action does not apply to it in its current state.
    pub reason: String,
}

/// What a bulk repair did, or on a dry run would do.
#[derive(SimpleObject)]
pub struct BulkRepairResult {
    /// `true` when nothing was done, only counted.
    pub dry_run: bool,
    /// Sagas matching the filter (at most 500 are considered).
    pub matched: i32,
    /// How many of them the action applies to in their current state.
    pub applicable: i32,
    /// Applied now (0 on a dry run).
    pub applied: i32,
    /// The matching sagas the action does not apply to, and why.
    pub refused: Vec<BulkRefusal>,
}

pub struct SagaConnection {
    page_info: PageInfo,
    edges: Vec<Edge<String, SagaGql, EmptyFields>>,
    total_count: i64,
}

/// A page of the sagas matching a filter, newest first (a Relay cursor connection).
#[Object]
impl SagaConnection {
    /// Information to aid in pagination.
    async fn page_info(&self) -> &PageInfo {
        &self.page_info
    }
    /// A list of edges.
    async fn edges(&self) -> &[Edge<String, SagaGql, EmptyFields>] {
        &self.edges
    }
    /// A list of nodes.
    async fn nodes(&self) -> Vec<&SagaGql> {
        self.edges.iter().map(|e| &e.node).collect()
    }
    /// Sagas matching the filter, on every page.
    async fn total_count(&self) -> i64 {
        self.total_count
    }
}

fn actor(ctx: &Context<'_>) -> Result<ops::Actor> {
    let u = operator(ctx)?;
    Ok(ops::Actor { id: u.id, email: u.email.clone() })
}

/// Which saga an operator repairs, and why.
#[derive(async_graphql::InputObject)]
#[graphql(name = "SagaRepairInput")]
pub struct SagaRepairInput {
    /// The saga to repair.
    pub saga_id: ID,
    /// Why, for the audit log (1 to 500 characters).
    pub reason: String,
    /// Chosen by the operator's client: the same key on the same saga applies once.
    pub idempotency_key: String,
}

/// A repair of every saga matching a filter.
#[derive(async_graphql::InputObject)]
#[graphql(name = "BulkRepairInput")]
pub struct BulkRepairInput {
    /// Which sagas; at least one field must be set.
    pub filter: SagaFilterInput,
    /// What to do to each.
    pub action: OperatorAction,
    /// Why, for each saga's audit log (1 to 500 characters).
    pub reason: String,
    /// Chosen by the operator's client: the same key applies once per saga.
    pub idempotency_key: String,
    /// Only count what would be done (the default).
    #[graphql(default = true)]
    pub dry_run: bool,
}

async fn apply(
    ctx: &Context<'_>,
    action: OperatorAction,
    input: SagaRepairInput,
) -> Result<SagaActionResult> {
    let actor = actor(ctx)?;
    let id = parse_saga_id(&input.saga_id)?;
    let s = state(ctx);
    let result = ops::act(&s.pool, &s.sagas, id, action, &input.reason, &input.idempotency_key, &actor).await;
    let outcome = match &result {
        Ok(a) if a.replayed => "replayed",
        Ok(_) => "applied",
        Err(AppError::Conflict(_)) => "refused",
        Err(_) => "failed",
    };
    s.metrics.saga_repair(action.as_str(), outcome);
    let applied = result?;
    Ok(SagaActionResult { saga: SagaGql(applied.saga), replayed: applied.replayed })
}

#[derive(Default)]
pub struct SagaMutation;

/// Operator repairs. Each takes the reason to record and an idempotency key (the same key on
/// the same saga applies once), is written to the saga's audit log, and is refused with
/// `CONFLICT` when the saga's state does not allow it.
#[Object]
impl SagaMutation {
    /// Operators only: a `NEEDS_ATTENTION` saga sends its step's command (or compensation) again.
    #[graphql(guard = "OperatorOnly")]
    async fn retry_saga_step(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The saga, the reason and an idempotency key.")] input: SagaRepairInput,
    ) -> Result<SagaActionResult> {
        apply(ctx, OperatorAction::RetryStep, input).await
    }

    /// Operators only: a `NEEDS_ATTENTION` saga continues as if its step (or compensation) had
    /// succeeded (checked by the operator).
    #[graphql(guard = "OperatorOnly")]
    async fn resume_saga(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The saga, the reason and an idempotency key.")] input: SagaRepairInput,
    ) -> Result<SagaActionResult> {
        apply(ctx, OperatorAction::Resume, input).await
    }

    /// Operators only: a running (or paused forward) saga compensates from its current step.
    #[graphql(guard = "OperatorOnly")]
    async fn force_compensate_saga(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The saga, the reason and an idempotency key.")] input: SagaRepairInput,
    ) -> Result<SagaActionResult> {
        apply(ctx, OperatorAction::ForceCompensate, input).await
    }

    /// Operators only: a running (or paused forward) saga completes and its order is confirmed.
    #[graphql(guard = "OperatorOnly")]
    async fn force_complete_saga(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The saga, the reason and an idempotency key.")] input: SagaRepairInput,
    ) -> Result<SagaActionResult> {
        apply(ctx, OperatorAction::ForceComplete, input).await
    }

    /// Operators only: `input.action` on every saga matching `input.filter` (at most 500; a
    /// filter is required). `dryRun` (the default) only counts what would be done.
    #[graphql(guard = "OperatorOnly")]
    async fn bulk_repair_sagas(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The filter, the action, the reason and an idempotency key.")]
        input: BulkRepairInput,
    ) -> Result<BulkRepairResult> {
        let BulkRepairInput { filter, action, reason, idempotency_key, dry_run } = input;
        let actor = actor(ctx)?;
        if filter.is_empty() {
            return Err(AppError::bad_input("a bulk action needs a filter").into());
        }
        let s = state(ctx);
        let f = filter.to_filter(&s.sagas)?;
        let out =
            ops::bulk(&s.pool, &s.sagas, &f, action, &reason, &idempotency_key, &actor, dry_run).await?;
        if !dry_run {
            for _ in 0..out.applied {
                s.metrics.saga_repair(action.as_str(), "applied");
            }
        }
        Ok(BulkRepairResult {
            dry_run,
            matched: out.matched as i32,
            applicable: out.applicable as i32,
            applied: out.applied as i32,
            refused: out
                .refused
                .into_iter()
                .map(|(id, reason)| BulkRefusal { saga_id: NodeId::Saga(id).encode(), reason })
                .collect(),
        })
    }
}
