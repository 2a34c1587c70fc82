//! The catalog collection. Products change rarely and every cart change and order reads them, so
//! reads go through a short per-process cache: on the benchmark machine each saved round trip to
//! the Mongo-wire server was worth more throughput than anything else (docs/benchmarks.md).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};

use super::Mongo;
use ecommerce_core::catalog::Product;
use ecommerce_core::domain::Money;

const COLLECTION: &str = "products";

/// How stale a cached product may be. A price change reaches orders placed through another
/// process within this long; through this process at once.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

pub type Cache = HashMap<String, (Product, Instant)>;

fn to_product(d: &Document) -> Option<Product> {
    Some(Product {
        sku: d.get_str("_id").ok()?.to_string(),
        name: d.get_str("name").ok()?.to_string(),
        // A stored price that is not valid money reads as no product, like a missing field.
        price: Money::new(d.get_i64("price_minor").ok()?, d.get_str("currency").ok()?).ok()?,
    })
}

pub async fn upsert(m: &Mongo, p: &Product) -> Result<(), mongodb::error::Error> {
    m.db.collection::<Document>(COLLECTION)
        .update_one(
            doc! { "_id": &p.sku },
            doc! { "$set": { "name": &p.name, "price_minor": p.price.minor(), "currency": p.price.currency() } },
        )
        .upsert(true)
        .await?;
    m.products.lock().expect("catalog cache").remove(&p.sku);
    Ok(())
}

/// The products among `skus` (unknown skus are left out), from the cache where fresh.
pub async fn by_skus(m: &Mongo, skus: &[String]) -> Result<Vec<Product>, mongodb::error::Error> {
    let mut found = Vec::with_capacity(skus.len());
    let mut missing = Vec::new();
    {
        let cache = m.products.lock().expect("catalog cache");
        for sku in skus {
            match cache.get(sku) {
                Some((p, at)) if at.elapsed() < CACHE_TTL => found.push(p.clone()),
                _ => missing.push(sku.clone()),
            }
        }
    }
    if missing.is_empty() {
        return Ok(found);
    }
    let docs: Vec<Document> =
        m.db.collection::<Document>(COLLECTION)
            .find(doc! { "_id": { "$in": &missing } })
            .await?
            .try_collect()
            .await?;
    let fresh: Vec<Product> = docs.iter().filter_map(to_product).collect();
    let mut cache = m.products.lock().expect("catalog cache");
    let now = Instant::now();
    for p in &fresh {
        cache.insert(p.sku.clone(), (p.clone(), now));
    }
    found.extend(fresh);
    Ok(found)
}

/// A page of products by SKU, between `after` and `before` (both excluded): the first `limit`,
/// or with `from_end` the last `limit`. One more than `limit` is read to tell whether the page
/// has a neighbour; the bool says so.
pub async fn page(
    m: &Mongo,
    after: Option<&str>,
    before: Option<&str>,
    limit: i64,
    from_end: bool,
) -> Result<(Vec<Product>, bool), mongodb::error::Error> {
    let mut range = Document::new();
    if let Some(a) = after {
        range.insert("$gt", a);
    }
    if let Some(b) = before {
        range.insert("$lt", b);
    }
    let filter = if range.is_empty() {
        doc! {}
    } else {
        doc! { "_id": range }
    };
    let docs: Vec<Document> =
        m.db.collection::<Document>(COLLECTION)
            .find(filter)
            .sort(doc! { "_id": if from_end { -1 } else { 1 } })
            .limit(limit + 1)
            .await?
            .try_collect()
            .await?;
    let mut products: Vec<Product> = docs.iter().filter_map(to_product).collect();
    let more = docs.len() as i64 > limit;
    products.truncate(limit as usize);
    if from_end {
        products.reverse();
    }
    Ok((products, more))
}

/// How many products the catalog holds.
pub async fn count(m: &Mongo) -> Result<u64, mongodb::error::Error> {
    m.db.collection::<Document>(COLLECTION).count_documents(doc! {}).await
}
