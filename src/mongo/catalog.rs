use futures::TryStreamExt;
use mongodb::bson::{doc, Document};

use super::Mongo;
use crate::catalog::Product;
use crate::domain::Money;

const COLLECTION: &str = "products";

fn to_product(d: &Document) -> Option<Product> {
    Some(Product {
        sku: d.get_str("_id").ok()?.to_string(),
        name: d.get_str("name").ok()?.to_string(),
        price: Money {
            minor: d.get_i64("price_minor").ok()?,
            currency: d.get_str("currency").ok()?.to_string(),
        },
    })
}

pub async fn upsert(m: &Mongo, p: &Product) -> Result<(), mongodb::error::Error> {
    m.db.collection::<Document>(COLLECTION)
        .update_one(
            doc! { "_id": &p.sku },
            doc! { "$set": { "name": &p.name, "price_minor": p.price.minor, "currency": &p.price.currency } },
        )
        .upsert(true)
        .await?;
    Ok(())
}

pub async fn by_skus(m: &Mongo, skus: &[String]) -> Result<Vec<Product>, mongodb::error::Error> {
    let docs: Vec<Document> =
        m.db.collection::<Document>(COLLECTION)
            .find(doc! { "_id": { "$in": skus } })
            .await?
            .try_collect()
            .await?;
    Ok(docs.iter().filter_map(to_product).collect())
}

pub async fn list(m: &Mongo, limit: i64) -> Result<Vec<Product>, mongodb::error::Error> {
    let docs: Vec<Document> =
        m.db.collection::<Document>(COLLECTION)
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .limit(limit)
            .await?
            .try_collect()
            .await?;
    Ok(docs.iter().filter_map(to_product).collect())
}
