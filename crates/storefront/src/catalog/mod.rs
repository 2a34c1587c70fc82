//! The catalog: products (the core crate's [`ecommerce_core::catalog::Product`]) in MongoDB
//! (`crate::mongo::catalog`), and the demo catalog.

pub mod seed;
