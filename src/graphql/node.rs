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
use ecommerce_storefront::mongo::carts::{self, CartKey};
use ecommerce_storefront::mongo::catalog;

use super::cart::{CartGql, CartItemGql, CartLineGql};
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
    /// A cart: an account's (`Cart/<user id>`) or a guest's (`GuestCart/<random id>`, the
    /// guest's key to it).
    Cart(CartKey),
    /// A line of a cart as the deprecated `CartItem` type, by its cart and product.
    CartItem(CartKey, String),
    /// A line of a cart, by its cart and product.
    CartLine(CartKey, String),
    Saga(Uuid),
    /// A saga's event by its sequence: an id for caches, not fetched by `node(id:)`.
    SagaEvent(Uuid, i32),
    /// An operator action in the audit log: an id for caches, not fetched by `node(id:)`.
    SagaAuditEntry(i64),
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

impl NodeId {
    pub fn encode(&self) -> ID {
        let raw = match self {
            NodeId::Order(id) => format!("Order/{id}"),
            NodeId::OrderLine(order, sku) => format!("OrderLine/{order}/{sku}"),
            NodeId::Product(sku) => format!("Product/{sku}"),
            NodeId::Cart(CartKey::User(user)) => format!("Cart/{user}"),
            NodeId::Cart(CartKey::Guest(id)) => format!("GuestCart/{id}"),
            NodeId::CartItem(CartKey::User(user), sku) => format!("CartItem/{user}/{sku}"),
            NodeId::CartItem(CartKey::Guest(id), sku) => format!("GuestCartItem/{id}/{sku}"),
            NodeId::CartLine(CartKey::User(user), sku) => format!("CartLine/{user}/{sku}"),
            NodeId::CartLine(CartKey::Guest(id), sku) => format!("GuestCartLine/{id}/{sku}"),
            NodeId::Saga(id) => format!("Saga/{id}"),
            NodeId::SagaEvent(saga, seq) => format!("SagaEvent/{saga}/{seq}"),
            NodeId::SagaAuditEntry(id) => format!("SagaAuditEntry/{id}"),
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
            ("Cart", None) => NodeId::Cart(CartKey::User(uuid()?)),
            ("GuestCart", None) => NodeId::Cart(CartKey::Guest(uuid()?)),
            ("CartItem", Some(s)) => NodeId::CartItem(CartKey::User(uuid()?), sku(s)?),
            ("GuestCartItem", Some(s)) => NodeId::CartItem(CartKey::Guest(uuid()?), sku(s)?),
            ("CartLine", Some(s)) => NodeId::CartLine(CartKey::User(uuid()?), sku(s)?),
            ("GuestCartLine", Some(s)) => NodeId::CartLine(CartKey::Guest(uuid()?), sku(s)?),
            ("Saga", None) => NodeId::Saga(uuid()?),
            ("SagaEvent", Some(seq)) => NodeId::SagaEvent(uuid()?, seq.parse().ok()?),
            ("SagaAuditEntry", None) => NodeId::SagaAuditEntry(a.parse().ok()?),
            _ => return None,
        })
    }
}

/// An order's id from an argument: its global id, or (as before global ids) its database id.
impl NodeId {
    /// The cart this id names (a cart's, or a line's cart), if any.
    pub fn cart_key(&self) -> Option<CartKey> {
        match self {
            NodeId::Cart(key) | NodeId::CartItem(key, _) | NodeId::CartLine(key, _) => Some(*key),
            _ => None,
        }
    }
}

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
    CartLine(CartLineGql),
    Saga(SagaGql),
}

/// Most ids one `nodes` call takes.
pub const MAX_NODES: usize = 100;

/// What the complexity limit charges for each id `nodes` looks up, besides its selection: a
/// lookup is work however little is selected.
pub const NODE_LOOKUP_COST: usize = 2;

/// The objects `ids` name, in their order (`None` for each that is absent or not the caller's),
/// with one query per kind of object however many ids there are.
async fn fetch_all(ctx: &Context<'_>, ids: &[ID]) -> Result<Vec<Option<Node>>> {
    use std::collections::{HashMap, HashSet};
    let decoded: Vec<Option<NodeId>> = ids.iter().map(|id| NodeId::decode(id)).collect();
    let s = state(ctx);
    let wanted = |pick: &dyn Fn(&NodeId) -> Option<Uuid>| -> Vec<Uuid> {
        let set: HashSet<Uuid> = decoded.iter().flatten().filter_map(pick).collect();
        set.into_iter().collect()
    };

    let skus: Vec<String> = {
        let set: HashSet<&String> = decoded
            .iter()
            .flatten()
            .filter_map(|n| if let NodeId::Product(s) = n { Some(s) } else { None })
            .collect();
        set.into_iter().cloned().collect()
    };
    let products: HashMap<String, _> = match skus.is_empty() {
        true => HashMap::new(),
        false => catalog::by_skus(&s.mongo, &skus)
            .await
            .map_err(AppError::from)?
            .into_iter()
            .map(|p| (p.sku.clone(), p))
            .collect(),
    };
    // Everything but products is somebody's: the caller must be signed in.
    // Products and guests' carts are anyone's to see (a guest cart's id is its key); the rest
    // needs a signed-in caller.
    let public =
        |n: &NodeId| matches!(n, NodeId::Product(_)) || matches!(n.cart_key(), Some(CartKey::Guest(_)));
    let me = match decoded.iter().flatten().any(|n| !public(n)) {
        true => Some(user(ctx)?),
        false => user(ctx).ok(),
    };
    let sagas: HashMap<Uuid, _> = store::summaries(
        &s.pool,
        &wanted(&|n| match n {
            NodeId::Saga(id) => Some(*id),
            _ => None,
        }),
    )
    .await
    .map_err(AppError::from)?
    .into_iter()
    .map(|saga| (saga.id, saga))
    .collect();
    let mut order_ids = wanted(&|n| match n {
        NodeId::Order(id) | NodeId::OrderLine(id, _) => Some(*id),
        _ => None,
    });
    // A buyer sees the saga of their own order; an operator every saga.
    let operator = me.is_some_and(|u| u.has(crate::auth::Role::Operator));
    if !operator {
        order_ids.extend(sagas.values().map(|saga| saga.order_id));
    }
    let orders: HashMap<Uuid, _> = match (me, order_ids.is_empty()) {
        (Some(u), false) => {
            service::get_many(&s.pool, u.id, &order_ids).await?.into_iter().map(|o| (o.id, o)).collect()
        }
        _ => HashMap::new(),
    };
    let line_orders: Vec<Uuid> = wanted(&|n| match n {
        NodeId::OrderLine(id, _) => Some(*id),
        _ => None,
    })
    .into_iter()
    .filter(|id| orders.contains_key(id))
    .collect();
    let lines = match line_orders.is_empty() {
        true => Vec::new(),
        false => service::lines_of(&s.pool, &line_orders).await.map_err(AppError::from)?,
    };
    // The caller's own cart and any guest cart named; someone else's account cart is not read.
    let visible: HashSet<CartKey> = decoded
        .iter()
        .flatten()
        .filter_map(NodeId::cart_key)
        .filter(|key| match key {
            CartKey::User(owner) => me.is_some_and(|u| u.id == *owner),
            CartKey::Guest(_) => true,
        })
        .collect();
    let mut cart_of: HashMap<CartKey, ecommerce_core::cart::Cart> = HashMap::new();
    for key in visible {
        // An account's cart exists once its account does; a guest's only once it was created.
        let cart = match key {
            CartKey::User(_) => Some(carts::load(&s.mongo, key).await.map_err(AppError::from)?),
            CartKey::Guest(_) => carts::find(&s.mongo, key).await.map_err(AppError::from)?,
        };
        if let Some(cart) = cart {
            cart_of.insert(key, cart);
        }
    }

    Ok(decoded
        .into_iter()
        .map(|node_id| match node_id? {
            NodeId::Product(sku) => products.get(&sku).map(|p| Node::Product(ProductGql(p.clone()))),
            NodeId::Order(id) => orders.get(&id).map(|o| Node::Order(OrderGql(o.clone()))),
            NodeId::OrderLine(id, sku) => {
                let order = orders.get(&id)?;
                lines
                    .iter()
                    .find(|(o, l)| *o == id && l.sku == sku)
                    .map(|(_, l)| Node::OrderLine(OrderLineGql::new(id, l.clone(), &order.currency)))
            }
            NodeId::Cart(key) => cart_of.get(&key).map(|c| Node::Cart(CartGql::new(key, c.clone()))),
            NodeId::CartItem(key, sku) => {
                let item = cart_of.get(&key)?.items.iter().find(|i| i.sku == sku)?;
                Some(Node::CartItem(CartItemGql::new(key, item)))
            }
            NodeId::CartLine(key, sku) => {
                let item = cart_of.get(&key)?.items.iter().find(|i| i.sku == sku)?;
                Some(Node::CartLine(CartLineGql(CartItemGql::new(key, item))))
            }
            NodeId::Saga(id) => {
                let saga = sagas.get(&id)?;
                (operator || orders.contains_key(&saga.order_id)).then(|| Node::Saga(SagaGql(saga.clone())))
            }
            NodeId::SagaEvent(..) | NodeId::SagaAuditEntry(_) => None,
        })
        .collect())
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
        Ok(fetch_all(ctx, std::slice::from_ref(&id)).await?.pop().flatten())
    }

    /// Objects by their global ids (at most 100), in the order asked; `null` for each that is
    /// absent or not the caller's to see. Looked up together, one query per kind of object; the
    /// complexity limit charges each id its lookup and its selection.
    #[graphql(complexity = "ids.len().max(1) * (child_complexity + NODE_LOOKUP_COST)")]
    async fn nodes(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Global ids from objects' `id` (at most 100).")] ids: Vec<ID>,
    ) -> Result<Vec<Option<Node>>> {
        if ids.len() > MAX_NODES {
            return Err(AppError::bad_input(format!("at most {MAX_NODES} ids")).into());
        }
        fetch_all(ctx, &ids).await
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
            NodeId::Cart(CartKey::User(u)),
            NodeId::CartItem(CartKey::User(u), "BAG-003".into()),
            NodeId::Cart(CartKey::Guest(u)),
            NodeId::CartItem(CartKey::Guest(u), "BAG-003".into()),
            NodeId::CartLine(CartKey::User(u), "BAG-003".into()),
            NodeId::CartLine(CartKey::Guest(u), "BAG-003".into()),
            NodeId::Saga(u),
            NodeId::SagaEvent(u, 7),
            NodeId::SagaAuditEntry(42),
        ] {
            let id = n.encode();
            assert!(!id.contains('/') && !id.contains(&u.to_string()), "{}", id.0);
            assert_eq!(NodeId::decode(&id), Some(n));
        }
    }

    #[test]
    fn an_account_cart_and_a_guest_cart_never_share_an_id() {
        let u = Uuid::new_v4();
        assert_ne!(NodeId::Cart(CartKey::User(u)).encode(), NodeId::Cart(CartKey::Guest(u)).encode());
        assert_eq!(
            NodeId::decode(&NodeId::Cart(CartKey::User(u)).encode()).and_then(|n| n.cart_key()),
            Some(CartKey::User(u)),
            "existing account cart ids still name the account's cart"
        );
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
