//! The storefront: the catalog and carts (MongoDB), and placing an order from a cart. It stands on
//! the checkout crate for stock levels and for writing the order with its saga.

pub mod cart;
pub mod catalog;
pub mod mongo;
pub mod order;
pub mod roles;
