//! The demo catalog: a handful of products with stock, for development and the README walkthrough.

use sqlx::PgPool;

use crate::mongo::{catalog, Mongo};
use ecommerce_core::catalog::Product;
use ecommerce_core::domain::Money;
use ecommerce_platform::error::AppError;

pub fn demo_products() -> Vec<(Product, i32)> {
    let p = |sku: &str, name: &str, minor: i64, stock: i32| {
        (
            Product {
                sku: sku.into(),
                name: name.into(),
                price: Money::new(minor, "USD").expect("demo prices are valid"),
            },
            stock,
        )
    };
    vec![
        p("MUG-001", "Enamel camp mug", 1_499, 100),
        p("TEE-002", "Organic cotton tee", 2_900, 50),
        p("BAG-003", "Waxed canvas tote", 6_450, 20),
        p("PEN-004", "Brass fountain pen", 8_900, 10),
        p("LMT-005", "Limited print (last one)", 12_000, 1),
    ]
}

/// Upserts `products` into the catalog and sets their stock levels. Safe to run repeatedly.
pub async fn seed(pool: &PgPool, mongo: &Mongo, products: &[(Product, i32)]) -> Result<(), AppError> {
    for (product, stock) in products {
        catalog::upsert(mongo, product).await?;
        ecommerce_checkout::stock::set_level(pool, &product.sku, *stock).await?;
    }
    Ok(())
}
