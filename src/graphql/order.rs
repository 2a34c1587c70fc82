use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, InputObject, Object, Result, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::StreamExt;
use uuid::Uuid;

use ecommerce_checkout::order::{refund, service, Order, OrderLine};
use ecommerce_checkout::page::Cursor;
use ecommerce_checkout::saga::{store, FailureReason, SagaStatus, CHECKOUT, REFUND};
use ecommerce_core::address::{ShippingAddress, ShippingAddressInput};
use ecommerce_core::domain::Email;
use ecommerce_core::refusal::{Refusal, UserErrorCode};
use ecommerce_platform::error::AppError;

use super::cart::{announce_cart, CartGql};
use super::catalog::ProductGql;
use super::context::{state, trace_id, user};
use super::loader::{OrderLinesLoader, ProductLoader, SagaByOrderLoader};
use super::node::{order_uuid, NodeId};
use super::page::{self, connection, PageRequest};
use super::payload::{split, OrderPayload, UserErrorGql};
use super::saga::SagaTypeGql;
use super::saga::{known, SagaEventGql, SagaGql};
use super::types::{MoneyGql, OrderStatusGql};
use ecommerce_storefront::mongo::carts::CartKey;

pub struct OrderLineGql {
    order_id: Uuid,
    line: OrderLine,
    currency: String,
}

impl OrderLineGql {
    pub fn new(order_id: Uuid, line: OrderLine, currency: &str) -> Self {
        OrderLineGql { order_id, line, currency: currency.to_string() }
    }
}

/// Units of one product in an order, at the price they were ordered at.
#[Object(name = "OrderLine")]
impl OrderLineGql {
    /// The line's global id.
    pub(crate) async fn id(&self) -> ID {
        NodeId::OrderLine(self.order_id, self.line.sku.clone()).encode()
    }
    /// The product's stock-keeping unit.
    async fn sku(&self) -> &str {
        &self.line.sku
    }
    /// Units ordered.
    async fn quantity(&self) -> i32 {
        self.line.quantity
    }
    /// The price of one unit when the order was placed.
    async fn unit_price(&self) -> Result<MoneyGql> {
        MoneyGql::new(self.line.unit_price_minor, &self.currency)
    }
    /// `quantity` times `unitPrice`.
    async fn line_total(&self) -> Result<MoneyGql> {
        // Placing the order checked that every line total (and their sum) fits.
        let minor = self
            .line
            .unit_price_minor
            .checked_mul(i64::from(self.line.quantity))
            .ok_or_else(|| AppError::Internal(format!("line total of {} overflows", self.line.sku)))?;
        MoneyGql::new(minor, &self.currency)
    }
    /// The product as the catalog describes it now (batched across lines and orders).
    async fn product(&self, ctx: &Context<'_>) -> Result<Option<ProductGql>> {
        let p = ctx
            .data_unchecked::<DataLoader<ProductLoader>>()
            .load_one(self.line.sku.clone())
            .await
            .map_err(|e| async_graphql::Error::from(AppError::Internal(e.to_string())))?;
        Ok(p.map(ProductGql))
    }
}

pub struct OrderGql(pub Order);

/// A buyer's order: what was ordered, at what price, and how its checkout went.
#[Object(name = "Order")]
impl OrderGql {
    /// The order's global id.
    pub(crate) async fn id(&self) -> ID {
        NodeId::Order(self.0.id).encode()
    }
    /// The order's id in logs, traces, receipts and support requests (a UUID).
    async fn database_id(&self) -> String {
        self.0.id.to_string()
    }
    /// Where the order is.
    async fn status(&self) -> OrderStatusGql {
        self.0.status.into()
    }
    /// What the buyer pays.
    async fn total(&self) -> Result<MoneyGql> {
        MoneyGql::new(self.0.total_minor, &self.0.currency)
    }
    /// The sum of the lines' `lineTotal`, before shipping, taxes and discounts. The shop charges
    /// none of those yet, so it equals `total`; a client showing both stays right when it does.
    async fn subtotal(&self) -> Result<MoneyGql> {
        MoneyGql::new(self.0.total_minor, &self.0.currency)
    }
    /// Who to reach about the order, as given at checkout; `null` for orders placed without one
    /// (before `placeOrder(input:)`).
    async fn email(&self) -> Option<&str> {
        self.0.email.as_deref()
    }
    /// Where the order ships, as given at checkout; `null` for orders placed without an address
    /// (before `placeOrder(input:)`).
    async fn shipping_address(&self) -> Option<&ShippingAddress> {
        self.0.shipping_address.as_ref()
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
        Ok(lines.into_iter().map(|l| OrderLineGql::new(self.0.id, l, &self.0.currency)).collect())
    }
    /// The checkout saga: its progress step by step. Every order has one, written with it.
    // Batched: a page of orders reads all their sagas in one query.
    async fn saga(&self, ctx: &Context<'_>) -> Result<SagaGql> {
        self.saga_of(ctx, CHECKOUT)
            .await?
            .ok_or_else(|| AppError::Internal(format!("order {} has no checkout saga", self.0.id)).into())
    }
    /// The refund saga, once a refund was asked for (`requestRefund`); `null` before.
    async fn refund(&self, ctx: &Context<'_>) -> Result<Option<SagaGql>> {
        self.saga_of(ctx, REFUND).await
    }
}

impl OrderGql {
    async fn saga_of(&self, ctx: &Context<'_>, definition: &'static str) -> Result<Option<SagaGql>> {
        let s = ctx
            .data_unchecked::<DataLoader<SagaByOrderLoader>>()
            .load_one((self.0.id, definition.to_string()))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?;
        Ok(s.map(SagaGql))
    }
}

/// `payload` with the caller's cart as it is now, when the query asks for it.
async fn with_cart(ctx: &Context<'_>, mut payload: OrderPayload) -> Result<OrderPayload> {
    if ctx.look_ahead().field("cart").exists() {
        let (u, s) = (user(ctx)?, state(ctx));
        let key = CartKey::User(u.id);
        let cart = ecommerce_storefront::mongo::carts::load(&s.mongo, key).await.map_err(AppError::from)?;
        payload.cart = Some(CartGql::new(key, cart));
    }
    Ok(payload)
}

/// The order an id names; a malformed id names none, like an absent one (`NOT_FOUND`).
fn parse_id(id: &ID) -> Result<Uuid> {
    order_uuid(id).ok_or_else(|| async_graphql::Error::from(AppError::NotFound("order")))
}

/// What a buyer's mutation answers for an order id that is malformed, absent or someone else's:
/// one user error, alike for the three.
fn no_such_order() -> AppError {
    AppError::refused(UserErrorCode::OrderNotFound, "you have no order with this id")
}

connection!(
    OrderConnection,
    OrderGql,
    "A page of the signed-in buyer's orders, newest first (a Relay cursor connection).",
    "The buyer's orders, on every page."
);

fn order_cursor(o: &OrderGql) -> String {
    Cursor { created_at: o.0.created_at, id: o.0.id }.encode()
}

fn cursor(raw: &str) -> Result<Cursor> {
    Cursor::decode(raw).ok_or_else(|| AppError::bad_input("not a cursor of this list").into())
}

#[derive(Default)]
pub struct OrderQuery;

#[Object]
impl OrderQuery {
    /// One of the signed-in user's orders; `null` when they have none with this id.
    async fn order(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The order's id.")] id: ID,
    ) -> Result<Option<OrderGql>> {
        let u = user(ctx)?;
        let Some(id) = order_uuid(&id) else {
            return Ok(None);
        };
        match service::get(&state(ctx).pool, u.id, id).await {
            Ok(order) => Ok(Some(OrderGql(order))),
            Err(AppError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The signed-in user's orders, newest first: the `first` (default 20) after the cursor
    /// `after`, or the `last` before `before` (0 to 100 either way); costs the page size times
    /// its selection in query complexity.
    #[graphql(complexity = "page::complexity(first, last, 20, child_complexity)")]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Page size from the start, the newest (0 to 100).")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the page before.")] after: Option<String>,
        #[graphql(desc = "Page size from the end, the oldest (0 to 100).")] last: Option<i32>,
        #[graphql(desc = "The `startCursor` of the page after.")] before: Option<String>,
    ) -> Result<OrderConnection> {
        let u = user(ctx)?;
        let req = PageRequest::new(first, last, after, before, 20)?;
        let after = req.after.as_deref().map(cursor).transpose()?;
        let before = req.before.as_deref().map(cursor).transpose()?;
        let pool = &state(ctx).pool;
        let (orders, more) = service::page(pool, u.id, after, before, req.limit, req.from_end).await?;
        let total = service::count(pool, u.id).await?;
        let (edges, page_info) = req.finish(orders.into_iter().map(OrderGql).collect(), more, order_cursor);
        Ok(OrderConnection { page_info, edges, total_count: total })
    }
}

/// A checkout: what `placeOrder` needs besides the cart.
#[derive(InputObject)]
pub struct PlaceOrderInput {
    /// Chosen by the client for this checkout (1 to 64 of `A-Z a-z 0-9 _ - : .`); sent again on
    /// a retry, it returns the same order.
    pub idempotency_key: String,
    /// The payment method, as the payment provider's client library tokenized it.
    pub payment_token: String,
    /// Who to reach about the order; the account's address when absent.
    pub email: Option<String>,
    /// Where the order ships.
    pub shipping_address: ShippingAddressInput,
}

#[derive(Default)]
pub struct OrderMutation;

#[Object]
impl OrderMutation {
    /// Turns the cart into an order and starts checkout, with the buyer's contact e-mail and
    /// shipping address (`input`). The same `idempotencyKey` returns the same order however
    /// often it is sent. Follow progress with `orderEvents` or `myOrders`. What the buyer can fix
    /// comes back in `userErrors`, naming the input field (`["input", "shippingAddress",
    /// "postalCode"]`); nothing is ordered then.
    async fn place_order(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The checkout: idempotency key, payment token, e-mail and shipping address.")]
        input: Option<PlaceOrderInput>,
        // Deprecated in words, not with `@deprecated`: graphql-js's standard introspection query
        // (codegen's) leaves deprecated arguments out, and a client still sending them would fail
        // its own build the day they were marked. See the README's schema changelog.
        #[graphql(desc = "Deprecated: use `input.idempotencyKey` (with `input`, an order also gets an \
                          e-mail and a shipping address). Chosen by the client for this checkout.")]
        idempotency_key: Option<String>,
        #[graphql(desc = "Deprecated: use `input.paymentToken`. The payment method, as the payment \
                          provider's client library tokenized it.")]
        payment_token: Option<String>,
    ) -> Result<OrderPayload> {
        let u = user(ctx)?;
        let s = state(ctx);
        let (key, token, email, address) = match (input, idempotency_key, payment_token) {
            (Some(input), None, None) => {
                let email = match &input.email {
                    Some(e) => Email::parse(e).map_err(Refusal::invalid(UserErrorCode::InvalidEmail)),
                    None => Email::parse(&u.email).map_err(Refusal::invalid(UserErrorCode::InvalidEmail)),
                };
                let mut user_errors = Vec::new();
                let email = email.map_err(|r| user_errors.push(UserErrorGql::from(r).within("input"))).ok();
                let address = ShippingAddress::parse(&input.shipping_address)
                    .map_err(|refused| {
                        user_errors.extend(refused.into_iter().map(|r| UserErrorGql::from(r).within("input")))
                    })
                    .ok();
                if !user_errors.is_empty() {
                    return with_cart(ctx, OrderPayload::refused(user_errors)).await;
                }
                (input.idempotency_key, input.payment_token, email, address)
            }
            (None, Some(key), Some(token)) => (key, token, None, None),
            _ => {
                return Err(AppError::bad_input(
                    "placeOrder takes input (or, deprecated, idempotencyKey and paymentToken), not both",
                )
                .into())
            }
        };
        let limits = s.config.api.auth.rate_limits;
        crate::auth::rate_limit::hit(
            &s.pool,
            &format!("place:user:{}", u.id),
            limits.place_order_per_user,
            limits.window,
        )
        .await?;
        let placement = ecommerce_storefront::order::Placement {
            user_id: u.id,
            key: &key,
            payment_token: &token,
            trace_id: &trace_id(ctx),
            email: email.as_ref(),
            shipping_address: address.as_ref(),
            open_orders_below: limits.open_orders_per_user,
        };
        let placed =
            ecommerce_storefront::order::place(&s.pool, &s.mongo, &s.sagas.checkout, placement).await;
        let (order, user_errors) = split(placed)?;
        if order.is_some() {
            // The ordered units left the cart.
            announce_cart(s, u.id);
        }
        let mut payload = OrderPayload::of(order.map(OrderGql), user_errors);
        payload.order_edge = payload
            .order
            .as_ref()
            .map(|o| async_graphql::connection::Edge::new(order_cursor(o), OrderGql(o.0.clone())));
        with_cart(ctx, payload).await
    }

    /// Cancels an order that is not confirmed yet; stock and payment are released by compensation.
    async fn cancel_order(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The order's id.")] order_id: ID,
    ) -> Result<OrderPayload> {
        let u = user(ctx)?;
        let s = state(ctx);
        let cancelled = match parse_id(&order_id) {
            Err(_) => Err(no_such_order()),
            Ok(id) => match service::cancel(&s.pool, &s.sagas.checkout, u.id, id).await {
                // Someone else's order is as absent as one that never was.
                Err(AppError::NotFound(_)) => Err(no_such_order()),
                other => other,
            },
        };
        let (order, user_errors) = split(cancelled)?;
        Ok(OrderPayload::of(order.map(OrderGql), user_errors))
    }

    /// Asks for a confirmed order's money back: starts its refund saga (refund the payment,
    /// return the stock, mark the order `REFUNDED`) and returns the order, `REFUNDING`. Buyers
    /// may refund their own orders within the shop's refund window; operators any order. One
    /// refund per order: asked again, it returns the order with the refund it has (`refund`).
    /// Follow progress with `orderEvents(orderId, saga: REFUND)` or `myOrders`.
    async fn request_refund(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The order's id.")] order_id: ID,
        #[graphql(desc = "Why (1 to 500 characters), kept in the refund's history.")] reason: String,
    ) -> Result<OrderPayload> {
        let u = user(ctx)?;
        let s = state(ctx);
        let who = refund::Requester { user_id: u.id, operator: u.has(crate::auth::Role::Operator) };
        let requested = match parse_id(&order_id) {
            Err(_) => Err(no_such_order()),
            Ok(id) => {
                let window = s.config.api.refund_window;
                refund::request(&s.pool, &s.sagas.refund, id, who, &reason, window, &trace_id(ctx)).await
            }
        };
        let (order, user_errors) = split(requested)?;
        Ok(OrderPayload::of(order.map(OrderGql), user_errors))
    }
}

#[derive(Default)]
pub struct OrderSubscription;

#[Subscription]
impl OrderSubscription {
    /// Each of the signed-in buyer's orders as it is placed, confirmed or cancelled, from any
    /// tab, device or API instance: the `Order` after the change, so a normalized client cache
    /// updates itself by `id`. Starts with changes of the last few seconds, so none made while
    /// the subscription was being set up is missed; an order that changes twice within a moment
    /// may be reported once, in its latest state.
    async fn my_orders(&self, ctx: &Context<'_>) -> Result<BoxStream<'static, Result<OrderGql>>> {
        let u = user(ctx)?;
        let s = state(ctx);
        Ok(s.orders.orders_of(u.id).map(|r| r.map(OrderGql).map_err(Into::into)).boxed())
    }

    /// The signed-in buyer's cart as it is now, then each time it changes: from another tab or
    /// device, or when an order takes units out or a cancelled one puts them back.
    async fn my_cart(&self, ctx: &Context<'_>) -> Result<BoxStream<'static, Result<CartGql>>> {
        let u = user(ctx)?.id;
        Ok(state(ctx)
            .carts
            .cart_of(u)
            .map(move |r| r.map(|cart| CartGql::new(CartKey::User(u), cart)).map_err(Into::into))
            .boxed())
    }

    /// The order's saga events in order: first those already recorded, then live ones, ending
    /// with `COMPLETED` or `COMPENSATED`. A client that reconnects passes the last `sequence` it
    /// got as `afterSequence` and resumes there instead of replaying. `saga: REFUND` follows the
    /// order's refund (`NOT_FOUND` until one was asked for). An order id that is malformed,
    /// absent or someone else's ends the subscription with `NOT_FOUND`, alike.
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
        #[graphql(
            default_with = "SagaTypeGql::Checkout",
            desc = "Which of the order's sagas (its checkout by default)."
        )]
        saga: SagaTypeGql,
    ) -> Result<BoxStream<'static, Result<SagaEventGql>>> {
        let u = user(ctx)?;
        let id = parse_id(&order_id)?;
        let s = state(ctx);
        let order = service::get(&s.pool, u.id, id).await?;
        let saga = store::summary_by_order(&s.pool, order.id, saga.definition())
            .await
            .map_err(AppError::from)?
            .ok_or(AppError::NotFound(if saga == SagaTypeGql::Refund { "refund" } else { "order" }))?;
        let finished = SagaStatus::parse(&saga.status).is_some_and(|st| st.is_terminal());
        if finished {
            // Nothing more will come: what is recorded, read once (none when the client saw the
            // end already, or once SAGA_HISTORY_RETENTION_DAYS deleted the history).
            let recorded = match after_sequence >= saga.event_count {
                true => Vec::new(),
                false => {
                    store::events_after(&s.pool, saga.id, after_sequence).await.map_err(AppError::from)?
                }
            };
            let order_id = order.id;
            return Ok(futures::stream::iter(
                recorded.into_iter().map(move |e| SagaEventGql::new(e, order_id)),
            )
            .boxed());
        }
        Ok(s.feed
            .stream(saga.id, after_sequence)
            .map(move |r| {
                r.map_err(|e| AppError::from(e).into()).and_then(|e| SagaEventGql::new(e, order.id))
            })
            .boxed())
    }
}
