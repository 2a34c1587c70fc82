//! Cart operations: load, apply pure changes, save with optimistic concurrency, retry on conflict.

use crate::mongo::{carts, catalog, Mongo};
use ecommerce_core::cart::Cart;
use ecommerce_core::domain::{Quantity, Sku};
use ecommerce_core::refusal::{Refusal, UserErrorCode};
use ecommerce_platform::error::{AppError, AppResult};

pub use crate::mongo::carts::CartKey;

pub enum Change {
    Add(Sku, Quantity),
    Update(Sku, Quantity),
    Remove(Sku),
    Clear,
}

/// What a batch of changes came to: all of them made, or none (the first refused, by its index
/// in the batch, and the cart as it is).
#[derive(Debug)]
pub enum Outcome {
    Changed(Cart),
    Refused { at: usize, refusal: Refusal, cart: Cart },
}

fn apply(cart: &Cart, changes: &[Change]) -> Result<Cart, (usize, Refusal)> {
    let mut next = cart.clone();
    for (i, change) in changes.iter().enumerate() {
        match change {
            Change::Add(sku, q) => next.add(sku, *q),
            Change::Update(sku, q) => next.update(sku, *q),
            Change::Remove(sku) => next.remove(sku),
            Change::Clear => {
                next.clear();
                Ok(())
            }
        }
        .map_err(|r| (i, r))?;
    }
    Ok(next)
}

/// Applies `changes` in order to the cart, all or none: a refusal of any leaves the cart as it is.
/// A product added or set must be in the catalog (`UNKNOWN_SKU`; one catalog read for all). A
/// guest key that names no cart is `NotFound` (only [`create_guest`] makes one).
pub async fn change_all(mongo: &Mongo, key: CartKey, changes: &[Change]) -> AppResult<Outcome> {
    change(mongo, key, changes, false).await
}

async fn change(mongo: &Mongo, key: CartKey, changes: &[Change], create: bool) -> AppResult<Outcome> {
    let wanted: Vec<String> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Add(sku, _) | Change::Update(sku, _) => Some(sku.as_str().to_string()),
            _ => None,
        })
        .collect();
    let unknown = match wanted.is_empty() {
        true => None,
        false => {
            let found = catalog::by_skus(mongo, &wanted).await?;
            changes.iter().enumerate().find_map(|(i, c)| match c {
                Change::Add(sku, _) | Change::Update(sku, _)
                    if !found.iter().any(|p| p.sku == sku.as_str()) =>
                {
                    Some((
                        i,
                        Refusal::new(UserErrorCode::UnknownSku, format!("unknown sku {}", sku.as_str())),
                    ))
                }
                _ => None,
            })
        }
    };
    // The cart as this process last saw it, if it remembers it: the conditional save checks that it
    // is still the stored one, so an unchanged cart costs one round trip instead of two.
    let (mut cart, mut fresh) = match carts::cached(mongo, key) {
        Some(cart) if unknown.is_none() => (cart, false),
        _ => (carts::load(mongo, key).await?, true),
    };
    let mut saves = 0;
    loop {
        if matches!(key, CartKey::Guest(_)) && cart.version == 0 && !create {
            if !fresh {
                (cart, fresh) = (carts::load(mongo, key).await?, true);
                continue;
            }
            return Err(AppError::NotFound("cart"));
        }
        if let Some((at, refusal)) = unknown.clone() {
            return Ok(Outcome::Refused { at, refusal, cart });
        }
        let next = match apply(&cart, changes) {
            Ok(next) => next,
            // A remembered copy may be stale: only the stored cart can refuse a change.
            Err(_) if !fresh => {
                (cart, fresh) = (carts::load(mongo, key).await?, true);
                continue;
            }
            Err((at, refusal)) => return Ok(Outcome::Refused { at, refusal, cart }),
        };
        if carts::save(mongo, key, &next).await? {
            return Ok(Outcome::Changed(Cart { version: next.version.max(0) + 1, ..next }));
        }
        saves += 1;
        if saves == 5 {
            return Err(AppError::Conflict("the cart is being changed concurrently; try again".into()));
        }
        (cart, fresh) = (carts::load(mongo, key).await?, true);
    }
}

/// A new guest cart holding `changes` applied to an empty cart, all or none; nothing is saved
/// when one is refused. An empty cart is saved too (as version 1), so its id names it from now on.
pub async fn create_guest(mongo: &Mongo, changes: &[Change]) -> AppResult<(CartKey, Outcome)> {
    let key = CartKey::new_guest();
    Ok((key, change(mongo, key, changes, true).await?))
}
