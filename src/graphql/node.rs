//! Object identification (the Relay server specification): every object a client caches has an
//! opaque, globally unique `id`, and `node(id:)`/`nodes(ids:)` fetch any of them again. An id is
//! the object's type and key, base64url-encoded; clients must not take it apart. A lookup of an
//! id the caller may not see returns `null`, exactly like one that does not exist.

use async_graphql::{Context, Interface, Object, Result, ID};
use base64::Engine;
use uuid::Uuid;

use ecommerce_checkout::order::service;
use ecommerce_checkout::saga::store;
use ecommerce_core::domain::Sku;
use ecommerce_platform::error::AppError;
use ecommerce_storefront::mongo::{carts, catalog};

use super::cart::{CartGql, CartItemGql};
use super::catalog::ProductGql;
use super::context::{state, user};
use super::order::{OrderGql, OrderLineGql};
use super::saga::SagaGql;

/// Which object an id names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeId {
    Order(Uuid),
    OrderLine(Uuid, String),
    Product(String),
    Cart(Uuid),
    CartItem(Uuid, String),
    Saga(Uuid),
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

impl NodeId {
    pub fn encode(&self) -> ID {
        let raw = match self {
            NodeId::Order(id) => format!("Order/{id}"),
            NodeId::OrderLine(order, sku) => format!("OrderLine/{order}/{sku}"),
            NodeId::Product(sku) => format!("Product/{sku}"),
            NodeId::Cart(user) => format!("Cart/{user}"),
            NodeId::CartItem(user, sku) => format!("CartItem/{user}/{sku}"),
            NodeId::Saga(id) => format!("Saga/{id}"),
        };
        ID(B64.encode(raw))
    }

    pub fn decode(id: &str) -> Option<NodeId> {
        let raw = String::from_utf8(B64.decode(id).ok()?).ok()?;
        let mut parts = raw.splitn(3, '/');
        let (kind, a, b) = (parts.next()?, parts.next()?, parts.next());
        let uuid = || a.parse::<Uuid>().ok();
        let sku = |s: &str| Sku::parse(s).ok().map(Sku::into_string);
        Some(match (kind, b) {
            ("Order", None) => NodeId::Order(uuid()?),
            ("OrderLine", Some(s)) => NodeId::OrderLine(uuid()?, sku(s)?),
            ("Product", None) => NodeId::Product(sku(a)?),
            ("Cart", None) => NodeId::Cart(uuid()?),
            ("CartItem", Some(s)) => NodeId::CartItem(uuid()?, sku(s)?),
            ("Saga", None) => NodeId::Saga(uuid()?),
            _ => return None,
        })
    }
}

/// An order's id from an argument: its global id, or (as before global ids) its database id.
pub fn order_uuid(id: &ID) -> Option<Uuid> {
    match NodeId::decode(id) {
        Some(NodeId::Order(u)) => Some(u),
        _ => id.parse().ok(),
    }
}

/// A saga's id from an argument: its global id, or (as before global ids) its database id.
pub fn saga_uuid(id: &ID) -> Option<Uuid> {
    match NodeId::decode(id) {
        Some(NodeId::Saga(u)) => Some(u),
        _ => id.parse().ok(),
    }
}

/// An object with a global id, which `node(id:)` fetches again.
#[derive(Interface)]
#[graphql(
    name = "Node",
    field(name = "id", ty = "ID", desc = "An opaque id, unique across every type: pass it to `node(id:)`.")
)]
pub enum Node {
    Order(OrderGql),
    OrderLine(OrderLineGql),
    Product(ProductGql),
    Cart(CartGql),
    CartItem(CartItemGql),
    Saga(SagaGql),
}

/// Most ids one `nodes` call takes.
pub const MAX_NODES: usize = 100;

async fn fetch(ctx: &Context<'_>, id: &ID) -> Result<Option<Node>> {
    let Some(node_id) = NodeId::decode(id) else {
        return Ok(None);
    };
    let s = state(ctx);
    let own = |owner: Uuid| -> Result<bool> { Ok(user(ctx)?.id == owner) };
    Ok(match node_id {
        NodeId::Product(sku) => catalog::by_skus(&s.mongo, &[sku])
            .await
            .map_err(AppError::from)?
            .into_iter()
            .next()
            .map(|p| Node::Product(ProductGql(p))),
        NodeId::Order(order_id) => match service::get(&s.pool, user(ctx)?.id, order_id).await {
            Ok(order) => Some(Node::Order(OrderGql(order))),
            Err(AppError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        },
        NodeId::OrderLine(order_id, sku) => match service::get(&s.pool, user(ctx)?.id, order_id).await {
            Ok(order) => service::lines_of(&s.pool, &[order_id])
                .await
                .map_err(AppError::from)?
                .into_iter()
                .find(|(_, l)| l.sku == sku)
                .map(|(_, l)| Node::OrderLine(OrderLineGql::new(order_id, l, &order.currency))),
            Err(AppError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        },
        NodeId::Cart(owner) => {
            if !own(owner)? {
                return Ok(None);
            }
            Some(Node::Cart(CartGql::new(owner, carts::load(&s.mongo, owner).await.map_err(AppError::from)?)))
        }
        NodeId::CartItem(owner, sku) => {
            if !own(owner)? {
                return Ok(None);
            }
            let cart = carts::load(&s.mongo, owner).await.map_err(AppError::from)?;
            cart.items.iter().find(|i| i.sku == sku).map(|i| Node::CartItem(CartItemGql::new(owner, i)))
        }
        NodeId::Saga(saga_id) => {
            let u = user(ctx)?;
            let Some(saga) = store::summary(&s.pool, saga_id).await.map_err(AppError::from)? else {
                return Ok(None);
            };
            // An operator sees every saga; a buyer the saga of their own order.
            let visible = u.has(crate::auth::Role::Operator)
                || service::get(&s.pool, u.id, saga.order_id).await.map(|_| true).or_else(|e| match e {
                    AppError::NotFound(_) => Ok(false),
                    e => Err(e),
                })?;
            visible.then_some(Node::Saga(SagaGql(saga)))
        }
    })
}

#[derive(Default)]
pub struct NodeQuery;

#[Object]
impl NodeQuery {
    /// Any object by its global id; `null` when there is none, or it is not the caller's to see.
    async fn node(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A global id from any object's `id`.")] id: ID,
    ) -> Result<Option<Node>> {
        fetch(ctx, &id).await
    }

    /// Objects by their global ids (at most 100), in the order asked; `null` for each that is
    /// absent or not the caller's to see.
    #[graphql(complexity = "ids.len().max(1) * child_complexity")]
    async fn nodes(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Global ids from objects' `id` (at most 100).")] ids: Vec<ID>,
    ) -> Result<Vec<Option<Node>>> {
        if ids.len() > MAX_NODES {
            return Err(AppError::bad_input(format!("at most {MAX_NODES} ids")).into());
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            out.push(fetch(ctx, id).await?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_opaque() {
        let u = Uuid::new_v4();
        for n in [
            NodeId::Order(u),
            NodeId::OrderLine(u, "MUG-001".into()),
            NodeId::Product("TEE-002".into()),
            NodeId::Cart(u),
            NodeId::CartItem(u, "BAG-003".into()),
            NodeId::Saga(u),
        ] {
            let id = n.encode();
            assert!(!id.contains('/') && !id.contains(&u.to_string()), "{}", id.0);
            assert_eq!(NodeId::decode(&id), Some(n));
        }
    }

    #[test]
    fn foreign_and_malformed_ids_name_nothing() {
        for raw in ["", "x", "Order/not-a-uuid", "Product/bad sku", "Widget/1", "Cart/", "OrderLine/1/2"] {
            assert_eq!(NodeId::decode(&B64.encode(raw)), None, "{raw}");
        }
        assert_eq!(NodeId::decode("%%%"), None);
        let u = Uuid::new_v4();
        assert_eq!(order_uuid(&NodeId::Saga(u).encode()), None, "a saga's id is not an order's");
        assert_eq!(order_uuid(&ID(u.to_string())), Some(u), "database ids still work");
        assert_eq!(saga_uuid(&NodeId::Saga(u).encode()), Some(u));
    }
}
