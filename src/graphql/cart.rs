use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Object, Result};

use ecommerce_core::cart::Cart;
use ecommerce_core::catalog::Product;
use ecommerce_core::domain::{Money, Quantity, Sku};
use ecommerce_platform::error::AppError;
use ecommerce_storefront::cart::service::{self, Change};
use ecommerce_storefront::mongo::carts;

use super::catalog::ProductGql;
use super::context::{state, user};
use super::loader::ProductLoader;
use super::types::MoneyGql;

pub struct CartGql(pub Cart);

pub struct CartItemGql {
    sku: String,
    quantity: i32,
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
        Ok(product(ctx, &self.sku).await?.and_then(|p| p.price.times(self.quantity)).map(|m| (&m).into()))
    }
}

/// What the signed-in buyer is about to order.
#[Object(name = "Cart")]
impl CartGql {
    /// One entry per product, in the order they were added.
    async fn items(&self) -> Vec<CartItemGql> {
        self.0.items.iter().map(|i| CartItemGql { sku: i.sku.clone(), quantity: i.quantity }).collect()
    }
    /// Total units in the cart.
    async fn item_count(&self) -> i32 {
        self.0.items.iter().map(|i| i.quantity).sum()
    }
    /// `null` for an empty cart.
    async fn total(&self, ctx: &Context<'_>) -> Result<Option<MoneyGql>> {
        let mut total: Option<Money> = None;
        for item in &self.0.items {
            let Some(p) = product(ctx, &item.sku).await? else {
                continue;
            };
            let line = p.price.times(item.quantity).ok_or(AppError::bad_input("total too large"))?;
            total = Some(match total {
                None => line,
                Some(t) => t.checked_add(&line).ok_or(AppError::bad_input("cart mixes currencies"))?,
            });
        }
        Ok(total.as_ref().map(Into::into))
    }
}

#[derive(Default)]
pub struct CartQuery;

#[Object]
impl CartQuery {
    /// The signed-in user's cart.
    async fn cart(&self, ctx: &Context<'_>) -> Result<CartGql> {
        let u = user(ctx)?;
        Ok(CartGql(carts::load(&state(ctx).mongo, u.id).await.map_err(AppError::from)?))
    }
}

#[derive(Default)]
pub struct CartMutation;

fn sku(raw: &str) -> Result<Sku> {
    Sku::parse(raw).map_err(|e| AppError::from(e).into())
}
fn qty(raw: i32) -> Result<Quantity> {
    Quantity::parse(raw as i64).map_err(|e| AppError::from(e).into())
}

async fn apply(ctx: &Context<'_>, change: Change) -> Result<CartGql> {
    let u = user(ctx)?;
    Ok(CartGql(service::change(&state(ctx).mongo, u.id, change).await?))
}

#[Object]
impl CartMutation {
    /// Adds units of a product (1 to 99 per line).
    async fn add_to_cart(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product's stock-keeping unit.")] sku: String,
        #[graphql(desc = "Units to add to what the cart holds.")] quantity: i32,
    ) -> Result<CartGql> {
        user(ctx)?;
        apply(ctx, Change::Add(self::sku(&sku)?, qty(quantity)?)).await
    }
    /// Sets how many units of a product the cart holds (1 to 99).
    async fn update_cart_item(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product's stock-keeping unit.")] sku: String,
        #[graphql(desc = "The new number of units.")] quantity: i32,
    ) -> Result<CartGql> {
        user(ctx)?;
        apply(ctx, Change::Update(self::sku(&sku)?, qty(quantity)?)).await
    }
    /// Takes a product out of the cart.
    async fn remove_from_cart(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product's stock-keeping unit.")] sku: String,
    ) -> Result<CartGql> {
        user(ctx)?;
        apply(ctx, Change::Remove(self::sku(&sku)?)).await
    }
    /// Empties the cart.
    async fn clear_cart(&self, ctx: &Context<'_>) -> Result<CartGql> {
        apply(ctx, Change::Clear).await
    }
}
