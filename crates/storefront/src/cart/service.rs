//! Cart operations: load, apply a pure change, save with optimistic concurrency, retry on conflict.

use uuid::Uuid;

use crate::mongo::{carts, catalog, Mongo};
use ecommerce_core::cart::Cart;
use ecommerce_core::domain::{Quantity, Sku};
use ecommerce_core::refusal::UserErrorCode;
use ecommerce_platform::error::{AppError, AppResult};

pub enum Change {
    Add(Sku, Quantity),
    Update(Sku, Quantity),
    Remove(Sku),
    Clear,
}

pub async fn change(mongo: &Mongo, user_id: Uuid, change: Change) -> AppResult<Cart> {
    if let Change::Add(sku, _) | Change::Update(sku, _) = &change {
        let found = catalog::by_skus(mongo, std::slice::from_ref(&sku.as_str().to_string())).await?;
        if found.is_empty() {
            return Err(AppError::refused(
                UserErrorCode::UnknownSku,
                format!("unknown sku {}", sku.as_str()),
            ));
        }
    }
    for _ in 0..5 {
        let mut cart = carts::load(mongo, user_id).await?;
        match &change {
            Change::Add(sku, q) => cart.add(sku, *q)?,
            Change::Update(sku, q) => cart.update(sku, *q)?,
            Change::Remove(sku) => cart.remove(sku)?,
            Change::Clear => cart.clear(),
        }
        if carts::save(mongo, user_id, &cart).await? {
            cart.version = cart.version.max(0) + 1;
            return Ok(cart);
        }
    }
    Err(AppError::Conflict("the cart is being changed concurrently; try again".into()))
}
