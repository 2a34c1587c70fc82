//! The catalog's product: a price in integer minor units. Products live in MongoDB (read-heavy,
//! schema-flexible); their stock levels live in PostgreSQL with the checkout's stock.

use crate::domain::Money;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub price: Money,
}
