//! The catalog: products with a price in integer minor units. Products live in MongoDB (read-heavy,
//! schema-flexible); their stock levels live in PostgreSQL with the stock service.

pub mod seed;

use ecommerce_core::domain::Money;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub price: Money,
}
