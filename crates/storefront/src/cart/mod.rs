//! Carts: one per user, in MongoDB (`crate::mongo::carts`). The cart and its rules are the core
//! crate's [`ecommerce_core::cart`]; here are the service the API calls and the worker that keeps
//! carts in step with orders.

pub mod live;
pub mod service;
pub mod worker;
