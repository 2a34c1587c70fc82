use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Object, Result, ID};
use uuid::Uuid;

use ecommerce_core::cart::{Cart, CartItem};
use ecommerce_core::catalog::Product;
use ecommerce_core::domain::{Money, Quantity, Sku};
use ecommerce_core::refusal::{Refusal, UserErrorCode};
use ecommerce_platform::error::AppError;
use ecommerce_storefront::cart::service::{self, Change};
use ecommerce_storefront::mongo::carts;

use super::catalog::ProductGql;
use super::context::{state, user, ApiState};
use super::loader::ProductLoader;
use super::node::NodeId;
use super::payload::{split, CartPayload};
use super::types::MoneyGql;

/// A buyer's cart: whose, and what it holds.
pub struct CartGql {
    owner: Uuid,
    cart: Cart,
}

impl CartGql {
    pub fn new(owner: Uuid, cart: Cart) -> Self {
        CartGql { owner, cart }
    }
}

pub struct CartItemGql {
    owner: Uuid,
    sku: String,
    quantity: i32,
}

impl CartItemGql {
    pub fn new(owner: Uuid, item: &CartItem) -> Self {
        CartItemGql { owner, sku: item.sku.clone(), quantity: item.quantity }
    }
}

async fn product(ctx: &Context<'_>, sku: &str) -> Result<Option<Product>> {
    ctx.data_unchecked::<DataLoader<ProductLoader>>()
        .load_one(sku.to_string())
        .await
        .map_err(|e| async_graphql::Error::from(AppError::Internal(e.to_string())))
}

/// Units of one product in a cart.
#[Object(name = "CartItem")]
impl CartItemGql {
    /// The line's global id (it stays while the product is in the cart).
    pub(crate) async fn id(&self) -> ID {
        NodeId::CartItem(self.owner, self.sku.clone()).encode()
    }
    /// The product's stock-keeping unit.
    async fn sku(&self) -> &str {
        &self.sku
    }
    /// Units of it (1 to 99).
    async fn quantity(&self) -> i32 {
        self.quantity
    }
    /// The product as the catalog describes it now; `null` if it left the catalog.
    async fn product(&self, ctx: &Context<'_>) -> Result<Option<ProductGql>> {
        Ok(product(ctx, &self.sku).await?.map(ProductGql))
    }
    /// Quantity times the current price; `null` if the product left the catalog.
    async fn line_total(&self, ctx: &Context<'_>) -> Result<Option<MoneyGql>> {
        product(ctx, &self.sku)
            .await?
            .and_then(|p| p.price.times(self.quantity))
            .as_ref()
            .map(MoneyGql::try_from)
            .transpose()
    }
}

/// What the signed-in buyer is about to order.
#[Object(name = "Cart")]
impl CartGql {
    /// The cart's global id (one cart per buyer).
    pub(crate) async fn id(&self) -> ID {
        NodeId::Cart(self.owner).encode()
    }
    /// One entry per product, in the order they were added.
    async fn items(&self) -> Vec<CartItemGql> {
        self.cart.items.iter().map(|i| CartItemGql::new(self.owner, i)).collect()
    }
    /// Total units in the cart.
    async fn item_count(&self) -> i32 {
        self.cart.items.iter().map(|i| i.quantity).sum()
    }
    /// `null` for an empty cart.
    async fn total(&self, ctx: &Context<'_>) -> Result<Option<MoneyGql>> {
        let mut total: Option<Money> = None;
        for item in &self.cart.items {
            let Some(p) = product(ctx, &item.sku).await? else {
                continue;
            };
            let line = p.price.times(item.quantity).ok_or(AppError::bad_input("total too large"))?;
            total = Some(match total {
                None => line,
                Some(t) => t.checked_add(&line).ok_or(AppError::bad_input("cart mixes currencies"))?,
            });
        }
        total.as_ref().map(MoneyGql::try_from).transpose()
    }
}

#[derive(Default)]
pub struct CartQuery;

#[Object]
impl CartQuery {
    /// The signed-in user's cart.
    async fn cart(&self, ctx: &Context<'_>) -> Result<CartGql> {
        let u = user(ctx)?;
        Ok(CartGql::new(u.id, carts::load(&state(ctx).mongo, u.id).await.map_err(AppError::from)?))
    }
}

#[derive(Default)]
pub struct CartMutation;

fn sku(raw: &str) -> Result<Sku, Refusal> {
    Sku::parse(raw).map_err(Refusal::invalid(UserErrorCode::InvalidSku))
}
fn qty(raw: i32) -> Result<Quantity, Refusal> {
    Quantity::parse(raw as i64).map_err(Refusal::invalid(UserErrorCode::InvalidQuantity))
}

/// Every input's refusal at once, so the buyer fixes them in one go.
fn refused(errors: impl IntoIterator<Item = Option<Refusal>>) -> CartPayload {
    CartPayload { cart: None, user_errors: errors.into_iter().flatten().map(Into::into).collect() }
}

/// Tells `myCart` subscribers on every instance, without holding up the answer.
pub fn announce_cart(s: &ApiState, user_id: Uuid) {
    let feed = s.feed.clone();
    tokio::spawn(async move { feed.cart_changed(user_id).await });
}

/// Counts one cart mutation against the user's budget (`CART_WRITES_MAX_PER_USER`).
async fn count_write(ctx: &Context<'_>) -> Result<()> {
    let s = state(ctx);
    let limits = s.config.api.auth.rate_limits;
    let key = format!("cart:user:{}", user(ctx)?.id);
    crate::auth::rate_limit::hit(&s.pool, &key, limits.cart_writes_per_user, limits.window).await?;
    Ok(())
}

async fn apply(ctx: &Context<'_>, change: Change) -> Result<CartPayload> {
    let u = user(ctx)?;
    let (cart, user_errors) = split(service::change(&state(ctx).mongo, u.id, change).await)?;
    if cart.is_some() {
        announce_cart(state(ctx), u.id);
    }
    Ok(CartPayload { cart: cart.map(|c| CartGql::new(u.id, c)), user_errors })
}

#[Object]
impl CartMutation {
    /// Adds units of a product (1 to 99 per line).
    async fn add_to_cart(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product's stock-keeping unit.")] sku: String,
        #[graphql(desc = "Units to add to what the cart holds.")] quantity: i32,
    ) -> Result<CartPayload> {
        count_write(ctx).await?;
        match (self::sku(&sku), qty(quantity)) {
            (Ok(sku), Ok(q)) => apply(ctx, Change::Add(sku, q)).await,
            (a, b) => Ok(refused([a.err(), b.err()])),
        }
    }
    /// Sets how many units of a product the cart holds (1 to 99).
    async fn update_cart_item(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product's stock-keeping unit.")] sku: String,
        #[graphql(desc = "The new number of units.")] quantity: i32,
    ) -> Result<CartPayload> {
        count_write(ctx).await?;
        match (self::sku(&sku), qty(quantity)) {
            (Ok(sku), Ok(q)) => apply(ctx, Change::Update(sku, q)).await,
            (a, b) => Ok(refused([a.err(), b.err()])),
        }
    }
    /// Takes a product out of the cart.
    async fn remove_from_cart(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product's stock-keeping unit.")] sku: String,
    ) -> Result<CartPayload> {
        count_write(ctx).await?;
        match self::sku(&sku) {
            Ok(sku) => apply(ctx, Change::Remove(sku)).await,
            Err(e) => Ok(refused([Some(e)])),
        }
    }
    /// Empties the cart.
    async fn clear_cart(&self, ctx: &Context<'_>) -> Result<CartPayload> {
        count_write(ctx).await?;
        apply(ctx, Change::Clear).await
    }
}
