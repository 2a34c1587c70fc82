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
    // The cart as this process last saw it, if it remembers it: the conditional save checks that it
    // is still the stored one, so an unchanged cart costs one round trip instead of two.
    let (mut cart, mut fresh) = match carts::cached(mongo, user_id) {
        Some(cart) => (cart, false),
        None => (carts::load(mongo, user_id).await?, true),
    };
    let mut saves = 0;
    loop {
        let mut next = cart.clone();
        let applied = match &change {
            Change::Add(sku, q) => next.add(sku, *q),
            Change::Update(sku, q) => next.update(sku, *q),
            Change::Remove(sku) => next.remove(sku),
            Change::Clear => {
                next.clear();
                Ok(())
            }
        };
        match applied {
            Ok(()) => {}
            // A remembered copy may be stale: only the stored cart can refuse a change.
            Err(_) if !fresh => {
                (cart, fresh) = (carts::load(mongo, user_id).await?, true);
                continue;
            }
            Err(refusal) => return Err(refusal.into()),
        }
        if carts::save(mongo, user_id, &next).await? {
            next.version = next.version.max(0) + 1;
            return Ok(next);
        }
        saves += 1;
        if saves == 5 {
            return Err(AppError::Conflict("the cart is being changed concurrently; try again".into()));
        }
        (cart, fresh) = (carts::load(mongo, user_id).await?, true);
    }
}
