//! Cart documents: `{ _id: user id, items: [{sku, quantity}], version, applied_orders: [order id] }`
//! in `carts`, one per account; and guests' carts, `{ _id: random id, items, version }` in
//! `guest_carts`, whose id is the guest's key to the cart ([`CartKey`]). A guest cart is merged
//! into the account's when the guest signs in ([`merge_guest`]) and then deleted.
//!
//! Every write sets a new version and is conditional on the version it read, so a cart this process
//! last saw at version `v` is exactly what the store holds for as long as the store's version is
//! still `v`. That makes a remembered cart ([`cached`]) safe to change without reading it first:
//! the conditional write checks it, and a write that finds another version reads the cart again.

use std::collections::HashMap;
use std::sync::Mutex;

use mongodb::bson::{doc, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use uuid::Uuid;

use super::Mongo;
use ecommerce_core::cart::{Cart, CartItem};

const COLLECTION: &str = "carts";
const GUEST_COLLECTION: &str = "guest_carts";

/// The accounts' carts (orders are placed from these only).
fn coll(m: &Mongo) -> mongodb::Collection<Document> {
    m.db.collection(COLLECTION)
}

/// Which cart: an account's (its id is the user's id) or a guest's (a random id, handed out once
/// and the guest's only key to it). The two live in separate collections, so no guest key can
/// name an account's cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CartKey {
    User(Uuid),
    Guest(Uuid),
}

impl CartKey {
    /// A new guest cart's key: 122 random bits.
    pub fn new_guest() -> Self {
        CartKey::Guest(Uuid::new_v4())
    }

    pub fn id(self) -> Uuid {
        match self {
            CartKey::User(id) | CartKey::Guest(id) => id,
        }
    }

    fn coll(self, m: &Mongo) -> mongodb::Collection<Document> {
        match self {
            CartKey::User(_) => coll(m),
            CartKey::Guest(_) => m.db.collection(GUEST_COLLECTION),
        }
    }
}

/// The carts a process last read or wrote: at most [`KNOWN_MAX`] of them.
#[derive(Default)]
pub struct Known(HashMap<CartKey, Cart>);

/// How many carts a process remembers (about a hundred bytes each, plus their lines).
pub const KNOWN_MAX: usize = 10_000;

fn remember(m: &Mongo, key: CartKey, cart: &Cart) {
    let mut known = lock(&m.carts);
    if known.0.len() >= KNOWN_MAX && !known.0.contains_key(&key) {
        // Any one will do: a cart not remembered is read before it is changed.
        if let Some(other) = known.0.keys().next().copied() {
            known.0.remove(&other);
        }
    }
    known.0.insert(key, cart.clone());
}

fn forget(m: &Mongo, key: CartKey) {
    lock(&m.carts).0.remove(&key);
}

fn lock(known: &Mutex<Known>) -> std::sync::MutexGuard<'_, Known> {
    // The map holds no invariant a panic could break halfway: keep using it.
    known.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The cart as this process last read or wrote it, if it remembers it. It may be stale (another
/// process may have changed it since): change it only through [`save`], which refuses a stale
/// version, and do not act on what it says without saving.
pub fn cached(m: &Mongo, key: CartKey) -> Option<Cart> {
    lock(&m.carts).0.get(&key).cloned()
}

/// The cart; an empty one (version 0) when none was saved yet.
pub async fn load(m: &Mongo, key: CartKey) -> Result<Cart, mongodb::error::Error> {
    Ok(find(m, key).await?.unwrap_or_default())
}

/// The cart, if one was saved under `key`.
pub async fn find(m: &Mongo, key: CartKey) -> Result<Option<Cart>, mongodb::error::Error> {
    let d = key.coll(m).find_one(doc! { "_id": key.id().to_string() }).await?;
    let cart = d.as_ref().map(from_doc);
    match (&cart, key) {
        (Some(cart), _) => remember(m, key, cart),
        // An account's cart that was never saved is an empty one; a guest key that names no
        // cart is not worth remembering.
        (None, CartKey::User(_)) => remember(m, key, &Cart::default()),
        (None, CartKey::Guest(_)) => forget(m, key),
    }
    Ok(cart)
}

/// The version of each of `users`' carts, in one query (a user without a cart has none listed).
pub async fn versions(m: &Mongo, users: &[Uuid]) -> Result<Vec<(Uuid, i64)>, mongodb::error::Error> {
    use futures::TryStreamExt;
    let ids: Vec<String> = users.iter().map(Uuid::to_string).collect();
    let docs: Vec<Document> = coll(m)
        .find(doc! { "_id": { "$in": ids } })
        .projection(doc! { "version": 1 })
        .await?
        .try_collect()
        .await?;
    Ok(docs
        .iter()
        .filter_map(|d| Some((d.get_str("_id").ok()?.parse().ok()?, d.get_i64("version").unwrap_or(0))))
        .collect())
}

fn from_doc(d: &Document) -> Cart {
    let items = d
        .get_array("items")
        .map(|a| {
            a.iter()
                .filter_map(|i| i.as_document())
                .filter_map(|i| {
                    Some(CartItem {
                        sku: i.get_str("sku").ok()?.to_string(),
                        quantity: i.get_i32("quantity").ok()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Cart { items, version: d.get_i64("version").unwrap_or(0) }
}

/// Whether the cart document lists `order` in its `field` (`applied_orders`, `restored_orders`).
fn marks(d: &Document, field: &str, order: &str) -> bool {
    d.get_array(field).map(|a| a.iter().any(|v| v.as_str() == Some(order))).unwrap_or(false)
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == 11000)
}

/// Saves `cart` if its stored version is still `cart.version`; returns `false` on a conflict.
/// Either way this process remembers what it learnt: the saved cart, or that its copy is stale.
pub async fn save(m: &Mongo, key: CartKey, cart: &Cart) -> Result<bool, mongodb::error::Error> {
    let saved = write(m, key, cart).await;
    match saved {
        Ok(true) => remember(m, key, &Cart { items: cart.items.clone(), version: cart.version.max(0) + 1 }),
        _ => forget(m, key),
    }
    saved
}

async fn write(m: &Mongo, key: CartKey, cart: &Cart) -> Result<bool, mongodb::error::Error> {
    let items: Vec<Document> =
        cart.items.iter().map(|i| doc! { "sku": &i.sku, "quantity": i.quantity }).collect();
    let id = key.id().to_string();
    if cart.version == 0 {
        let r = key
            .coll(m)
            .insert_one(doc! { "_id": &id, "items": items, "version": 1i64, "applied_orders": [] })
            .await;
        return match r {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(e),
        };
    }
    let r = key
        .coll(m)
        .update_one(
            doc! { "_id": &id, "version": cart.version },
            doc! { "$set": { "items": items, "version": cart.version + 1 } },
        )
        .await?;
    Ok(r.matched_count == 1)
}

/// Takes an order's units out of the buyer's cart once, however often it is asked: a
/// compare-and-set on the cart's version that also records the order as applied. `known` is the
/// cart as the caller just read it (placing the order), which saves a read when nobody changed it.
pub async fn take_order(
    m: &Mongo,
    user_id: Uuid,
    order_id: Uuid,
    lines: &[(String, i32)],
    mut known: Option<Cart>,
) -> Result<bool, mongodb::error::Error> {
    let id = user_id.to_string();
    let order = order_id.to_string();
    loop {
        let mut cart = match known.take() {
            Some(cart) => cart,
            None => {
                let Some(d) = coll(m).find_one(doc! { "_id": &id }).await? else {
                    return Ok(false); // no cart: nothing to take out
                };
                if marks(&d, "applied_orders", &order) {
                    return Ok(false);
                }
                from_doc(&d)
            }
        };
        if cart.version == 0 {
            return Ok(false);
        }
        cart.take_ordered(lines);
        if save_marked(m, &id, &cart, "applied_orders", &order, &["applied_orders"]).await? {
            cart.version += 1;
            remember(m, CartKey::User(user_id), &cart);
            return Ok(true);
        }
        forget(m, CartKey::User(user_id));
        // The buyer changed the cart meanwhile (or a twin delivery won): look again.
    }
}

/// Saves `cart` if its version is unchanged and `guard` does not list `order` yet, adding `order`
/// to each of `marks` (the last 100 are kept). `false` when someone else changed the cart first.
async fn save_marked(
    m: &Mongo,
    id: &str,
    cart: &Cart,
    guard: &str,
    order: &str,
    marks: &[&str],
) -> Result<bool, mongodb::error::Error> {
    let items: Vec<Document> =
        cart.items.iter().map(|i| doc! { "sku": &i.sku, "quantity": i.quantity }).collect();
    let mut push = Document::new();
    for field in marks {
        push.insert(*field, doc! { "$each": [order], "$slice": -100 });
    }
    let r = coll(m)
        .update_one(
            doc! { "_id": id, "version": cart.version, guard: { "$ne": order } },
            doc! { "$set": { "items": items, "version": cart.version + 1 }, "$push": push },
        )
        .await?;
    Ok(r.modified_count == 1)
}

/// Puts a cancelled order's units back into the cart, once, and only if they were taken out.
/// An order not taken out yet is marked as settled, so a late take-out does nothing.
pub async fn restore_order(
    m: &Mongo,
    user_id: Uuid,
    order_id: Uuid,
    lines: &[(String, i32)],
) -> Result<bool, mongodb::error::Error> {
    let id = user_id.to_string();
    let order = order_id.to_string();
    loop {
        let Some(d) = coll(m).find_one(doc! { "_id": &id }).await? else {
            return Ok(false); // no cart: the order's units were never in one we keep
        };
        if marks(&d, "restored_orders", &order) {
            return Ok(false);
        }
        let taken_out = marks(&d, "applied_orders", &order);
        let mut cart = from_doc(&d);
        if taken_out {
            cart.put_back(lines);
        }
        // Not taken out yet: mark it applied too, so a late take-out leaves the cart alone.
        let marks_to_add: &[&str] =
            if taken_out { &["restored_orders"] } else { &["restored_orders", "applied_orders"] };
        let saved = save_marked(m, &id, &cart, "restored_orders", &order, marks_to_add).await;
        forget(m, CartKey::User(user_id)); // a new version, or a copy found stale
        if saved? {
            return Ok(taken_out);
        }
    }
}

/// Removes an order's skus from the buyer's cart once, however often the event is delivered
/// (messages from versions that did not send quantities).
pub async fn apply_order(
    m: &Mongo,
    user_id: Uuid,
    order_id: Uuid,
    skus: &[String],
) -> Result<bool, mongodb::error::Error> {
    let r = coll(m)
        .update_one(
            doc! { "_id": user_id.to_string(), "applied_orders": { "$ne": order_id.to_string() } },
            doc! {
                "$pull": { "items": { "sku": { "$in": skus } } },
                "$push": { "applied_orders": { "$each": [order_id.to_string()], "$slice": -100 } },
                "$inc": { "version": 1i64 },
            },
        )
        .await;
    forget(m, CartKey::User(user_id));
    Ok(r?.modified_count == 1)
}

/// Moves a guest cart's lines into the account's cart, once, and deletes the guest cart: each
/// line is added to the account's line of the same product (at most 99 units; lines past the
/// cart's limit are dropped, as when a cancelled order's units come back). The account's cart
/// records the guest cart as merged, so a repeat (a retried sign-in, or a crash before the guest
/// cart was deleted) adds nothing twice. Returns the account's cart; `None` when there is no
/// such guest cart.
pub async fn merge_guest(
    m: &Mongo,
    user_id: Uuid,
    guest: Uuid,
) -> Result<Option<Cart>, mongodb::error::Error> {
    let guest_key = CartKey::Guest(guest);
    let Some(from) = find(m, guest_key).await? else {
        return Ok(None);
    };
    let id = user_id.to_string();
    let mark = guest.to_string();
    let lines: Vec<(String, i32)> = from.items.iter().map(|i| (i.sku.clone(), i.quantity)).collect();
    let merged = loop {
        let d = coll(m).find_one(doc! { "_id": &id }).await?;
        let mut cart = d.as_ref().map(from_doc).unwrap_or_default();
        if d.as_ref().is_some_and(|d| marks(d, "merged_carts", &mark)) {
            break cart; // merged before; only the deletion was left
        }
        cart.put_back(&lines);
        let saved = match cart.version {
            // No account cart yet: create it, marked.
            0 => match coll(m)
                .insert_one(doc! {
                    "_id": &id,
                    "items": cart.items.iter().map(|i| doc! { "sku": &i.sku, "quantity": i.quantity }).collect::<Vec<_>>(),
                    "version": 1i64, "applied_orders": [], "merged_carts": [&mark],
                })
                .await
            {
                Ok(_) => true,
                Err(e) if is_duplicate_key(&e) => false,
                Err(e) => return Err(e),
            },
            _ => save_marked(m, &id, &cart, "merged_carts", &mark, &["merged_carts"]).await?,
        };
        forget(m, CartKey::User(user_id));
        if saved {
            cart.version += 1;
            break cart;
        }
    };
    guest_key.coll(m).delete_one(doc! { "_id": guest.to_string() }).await?;
    forget(m, guest_key);
    Ok(Some(merged))
}
