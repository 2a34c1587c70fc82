use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Object, Result, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::StreamExt;
use uuid::Uuid;

use ecommerce_checkout::order::{service, Order, OrderLine};
use ecommerce_checkout::saga::{store, FailureReason, SagaStatus};
use ecommerce_platform::error::AppError;

use super::catalog::ProductGql;
use super::context::{state, trace_id, user};
use super::loader::{OrderLinesLoader, ProductLoader, SagaByOrderLoader};
use super::saga::{known, SagaEventGql, SagaGql};
use super::types::{MoneyGql, OrderStatusGql};

pub struct OrderLineGql(OrderLine, String);

/// Units of one product in an order, at the price they were ordered at.
#[Object(name = "OrderLine")]
impl OrderLineGql {
    /// The product's stock-keeping unit.
    async fn sku(&self) -> &str {
        &self.0.sku
    }
    /// Units ordered.
    async fn quantity(&self) -> i32 {
        self.0.quantity
    }
    /// The price of one unit when the order was placed.
    async fn unit_price(&self) -> MoneyGql {
        MoneyGql::new(self.0.unit_price_minor, &self.1)
    }
    /// The product as the catalog describes it now (batched across lines and orders).
    async fn product(&self, ctx: &Context<'_>) -> Result<Option<ProductGql>> {
        let p = ctx
            .data_unchecked::<DataLoader<ProductLoader>>()
            .load_one(self.0.sku.clone())
            .await
            .map_err(|e| async_graphql::Error::from(AppError::Internal(e.to_string())))?;
        Ok(p.map(ProductGql))
    }
}

pub struct OrderGql(pub Order);

/// A buyer's order: what was ordered, at what price, and how its checkout went.
#[Object(name = "Order")]
impl OrderGql {
    /// The order's id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Where the order is.
    async fn status(&self) -> OrderStatusGql {
        self.0.status.into()
    }
    /// What the buyer pays.
    async fn total(&self) -> MoneyGql {
        MoneyGql::new(self.0.total_minor, &self.0.currency)
    }
    /// The key `placeOrder` was called with.
    async fn idempotency_key(&self) -> &str {
        &self.0.idempotency_key
    }
    /// Why the order was cancelled; `null` unless it was.
    async fn cancel_reason(&self) -> Result<Option<FailureReason>> {
        self.0.cancel_reason.as_deref().map(|r| known(r, FailureReason::parse, "cancel reason")).transpose()
    }
    /// When it was placed.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When its status last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// What was ordered.
    // Batched: a page of orders reads all their lines in one query.
    async fn lines(&self, ctx: &Context<'_>) -> Result<Vec<OrderLineGql>> {
        let lines = ctx
            .data_unchecked::<DataLoader<OrderLinesLoader>>()
            .load_one(self.0.id)
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?
            .unwrap_or_default();
        Ok(lines.into_iter().map(|l| OrderLineGql(l, self.0.currency.clone())).collect())
    }
    /// The checkout saga: its progress step by step.
    // Batched: a page of orders reads all their sagas in one query.
    async fn saga(&self, ctx: &Context<'_>) -> Result<Option<SagaGql>> {
        let s = ctx
            .data_unchecked::<DataLoader<SagaByOrderLoader>>()
            .load_one(self.0.id)
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?;
        Ok(s.map(SagaGql))
    }
}

fn parse_id(id: &ID) -> Result<Uuid> {
    id.parse::<Uuid>().map_err(|_| async_graphql::Error::from(AppError::bad_input("not a valid order id")))
}

#[derive(Default)]
pub struct OrderQuery;

#[Object]
impl OrderQuery {
    /// One of the signed-in user's orders; someone else's is `NOT_FOUND`.
    async fn order(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The order's id.")] id: ID,
    ) -> Result<OrderGql> {
        let u = user(ctx)?;
        let id = parse_id(&id)?;
        Ok(OrderGql(service::get(&state(ctx).pool, u.id, id).await?))
    }

    /// The signed-in user's orders, newest first (1 to 100); costs `first` times its selection in
    /// query complexity.
    #[graphql(complexity = "first.clamp(1, 100) as usize * child_complexity")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20, validator(minimum = 1, maximum = 100), desc = "How many (1 to 100).")] first: i32,
    ) -> Result<Vec<OrderGql>> {
        let u = user(ctx)?;
        let orders = service::list(&state(ctx).pool, u.id, first as i64).await?;
        Ok(orders.into_iter().map(OrderGql).collect())
    }
}

#[derive(Default)]
pub struct OrderMutation;

#[Object]
impl OrderMutation {
    /// Turns the cart into an order and starts checkout. The same `idempotencyKey` returns the
    /// same order however often it is sent. Follow progress with `orderEvents`.
    async fn place_order(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Chosen by the client for this checkout (1 to 64 of `A-Z a-z 0-9 _ - : .`); \
                          sent again on a retry, it returns the same order.")]
        idempotency_key: String,
        #[graphql(desc = "The payment method, as the payment provider's client library tokenized it.")]
        payment_token: String,
    ) -> Result<OrderGql> {
        let u = user(ctx)?;
        let s = state(ctx);
        let order = ecommerce_storefront::order::place(
            &s.pool,
            &s.mongo,
            &s.saga,
            u.id,
            &idempotency_key,
            &payment_token,
            &trace_id(ctx),
        )
        .await?;
        Ok(OrderGql(order))
    }

    /// Cancels an order that is not confirmed yet; stock and payment are released by compensation.
    async fn cancel_order(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The order's id.")] order_id: ID,
    ) -> Result<OrderGql> {
        let u = user(ctx)?;
        let id = parse_id(&order_id)?;
        let s = state(ctx);
        Ok(OrderGql(service::cancel(&s.pool, &s.saga, u.id, id).await?))
    }
}

#[derive(Default)]
pub struct OrderSubscription;

#[Subscription]
impl OrderSubscription {
    /// The order's saga events in order: first those already recorded, then live ones, ending
    /// with `COMPLETED` or `COMPENSATED`. A client that reconnects passes the last `sequence` it
    /// got as `afterSequence` and resumes there instead of replaying.
    async fn order_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "One of the signed-in user's orders.")] order_id: ID,
        #[graphql(
            default = 0,
            validator(minimum = 0),
            desc = "Only events after this sequence number (0, the default: every event)."
        )]
        after_sequence: i32,
    ) -> Result<BoxStream<'static, Result<SagaEventGql>>> {
        let u = user(ctx)?;
        let id = parse_id(&order_id)?;
        let s = state(ctx);
        let order = service::get(&s.pool, u.id, id).await?;
        let saga = store::summary_by_order(&s.pool, order.id)
            .await
            .map_err(AppError::from)?
            .ok_or(AppError::NotFound("order"))?;
        let finished = SagaStatus::parse(&saga.status).is_some_and(|st| st.is_terminal());
        if finished && after_sequence >= saga.event_count {
            // The client saw the end already: nothing more will come.
            return Ok(futures::stream::empty().boxed());
        }
        Ok(s.feed
            .stream(saga.id, after_sequence)
            .map(|r| r.map_err(|e| AppError::from(e).into()).and_then(SagaEventGql::try_from))
            .boxed())
    }
}
