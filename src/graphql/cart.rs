//! Carts: an account's (one per account, `cart`) and guests' (`cartCreate`, whose id is the
//! guest's key), changed line by line (`cartLinesAdd/Update/Remove`, many lines at once, all or
//! none). Every cart mutation answers with the cart: the changed one, or the unchanged one beside
//! `userErrors`.

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, InputObject, Object, Result, SimpleObject, ID};
use uuid::Uuid;

use ecommerce_core::cart::{Cart, CartItem};
use ecommerce_core::catalog::Product;
use ecommerce_core::domain::{Money, Quantity, Sku};
use ecommerce_core::refusal::{Refusal, UserErrorCode};
use ecommerce_platform::error::AppError;
use ecommerce_storefront::cart::service::{self, CartKey, Change, Outcome};
use ecommerce_storefront::mongo::carts;

use super::catalog::ProductGql;
use super::context::{client_addr, state, user, ApiState};
use super::loader::ProductLoader;
use super::node::NodeId;
use super::payload::{CartPayload, UserErrorGql};
use super::types::MoneyGql;

pub struct CartGql {
    key: CartKey,
    cart: Cart,
}

impl CartGql {
    pub fn new(key: CartKey, cart: Cart) -> Self {
        CartGql { key, cart }
    }
}

pub struct CartItemGql {
    key: CartKey,
    sku: String,
    quantity: i32,
}

impl CartItemGql {
    pub fn new(key: CartKey, item: &CartItem) -> Self {
        CartItemGql { key, sku: item.sku.clone(), quantity: item.quantity }
    }

    async fn product(&self, ctx: &Context<'_>) -> Result<Option<Product>> {
        product(ctx, &self.sku).await
    }

    async fn line_total(&self, ctx: &Context<'_>) -> Result<Option<MoneyGql>> {
        self.product(ctx)
            .await?
            .and_then(|p| p.price.times(self.quantity))
            .as_ref()
            .map(MoneyGql::try_from)
            .transpose()
    }
}

async fn product(ctx: &Context<'_>, sku: &str) -> Result<Option<Product>> {
    ctx.data_unchecked::<DataLoader<ProductLoader>>()
        .load_one(sku.to_string())
        .await
        .map_err(|e| async_graphql::Error::from(AppError::Internal(e.to_string())))
}

/// Units of one product in a cart (the deprecated shape of `CartLine`).
#[Object(name = "CartItem")]
impl CartItemGql {
    /// The line's global id (it stays while the product is in the cart).
    pub(crate) async fn id(&self) -> ID {
        NodeId::CartItem(self.key, self.sku.clone()).encode()
    }
    /// The product's stock-keeping unit.
    async fn sku(&self) -> &str {
        &self.sku
    }
    /// Units of it (1 to 99).
    async fn quantity(&self) -> i32 {
        self.quantity
    }
    /// The product as the catalog describes it now; `null` if it left the catalog.
    #[graphql(name = "product")]
    async fn product_gql(&self, ctx: &Context<'_>) -> Result<Option<ProductGql>> {
        Ok(self.product(ctx).await?.map(ProductGql))
    }
    /// Quantity times the current price; `null` if the product left the catalog.
    #[graphql(name = "lineTotal")]
    async fn line_total_gql(&self, ctx: &Context<'_>) -> Result<Option<MoneyGql>> {
        self.line_total(ctx).await
    }
}

pub struct CartLineGql(pub CartItemGql);

/// Units of one product in a cart, at the catalog's price now.
#[Object(name = "CartLine")]
impl CartLineGql {
    /// The line's global id (it stays while the product is in the cart); pass it to
    /// `cartLinesUpdate` and `cartLinesRemove`.
    pub(crate) async fn id(&self) -> ID {
        NodeId::CartLine(self.0.key, self.0.sku.clone()).encode()
    }
    /// The product's stock-keeping unit.
    async fn sku(&self) -> &str {
        &self.0.sku
    }
    /// Units of it (1 to 99).
    async fn quantity(&self) -> i32 {
        self.0.quantity
    }
    /// The product as the catalog describes it now; `null` if it left the catalog.
    async fn product(&self, ctx: &Context<'_>) -> Result<Option<ProductGql>> {
        Ok(self.0.product(ctx).await?.map(ProductGql))
    }
    /// The price of one unit now; `null` if the product left the catalog.
    async fn unit_price(&self, ctx: &Context<'_>) -> Result<Option<MoneyGql>> {
        self.0.product(ctx).await?.as_ref().map(|p| MoneyGql::try_from(&p.price)).transpose()
    }
    /// `quantity` times `unitPrice`; `null` if the product left the catalog.
    async fn line_total(&self, ctx: &Context<'_>) -> Result<Option<MoneyGql>> {
        self.0.line_total(ctx).await
    }
}

/// What a cart costs now, at the catalog's prices.
#[derive(SimpleObject)]
pub struct CartCost {
    /// The sum of the lines' `lineTotal`, before shipping, taxes and discounts.
    pub subtotal: MoneyGql,
    /// What the buyer would pay. The shop charges no shipping, taxes or discounts yet, so it
    /// equals `subtotal`; a client showing both stays right when it does.
    pub total: MoneyGql,
}

impl CartGql {
    /// The sum of the lines still sold; `None` when none is (an empty cart) or they are priced in
    /// more than one currency (such a cart cannot be ordered: `MIXED_CURRENCIES`).
    async fn sum(&self, ctx: &Context<'_>) -> Result<Option<Money>> {
        let mut total: Option<Money> = None;
        for item in &self.cart.items {
            let Some(p) = product(ctx, &item.sku).await? else {
                continue;
            };
            let Some(line) = p.price.times(item.quantity) else { return Ok(None) };
            total = match total {
                None => Some(line),
                Some(t) => match t.checked_add(&line) {
                    Some(sum) => Some(sum),
                    None => return Ok(None),
                },
            };
        }
        Ok(total)
    }
}

/// What a buyer is about to order: an account's cart, or a guest's until they sign in.
#[Object(name = "Cart")]
impl CartGql {
    /// The cart's global id: an account's cart has one for good; a guest cart's id is the guest's
    /// key to it (keep it like a session token) and names nothing once the cart was merged into
    /// an account at sign-in.
    pub(crate) async fn id(&self) -> ID {
        NodeId::Cart(self.key).encode()
    }
    /// One line per product, in the order they were added.
    async fn lines(&self) -> Vec<CartLineGql> {
        self.cart.items.iter().map(|i| CartLineGql(CartItemGql::new(self.key, i))).collect()
    }
    /// Total units in the cart.
    async fn total_quantity(&self) -> i32 {
        self.cart.items.iter().map(|i| i.quantity).sum()
    }
    /// What the cart costs now; `null` for an empty cart (an amount needs a currency), or one
    /// whose products are priced in more than one currency.
    async fn cost(&self, ctx: &Context<'_>) -> Result<Option<CartCost>> {
        let Some(sum) = self.sum(ctx).await? else { return Ok(None) };
        Ok(Some(CartCost { subtotal: MoneyGql::try_from(&sum)?, total: MoneyGql::try_from(&sum)? }))
    }
    /// One entry per product, in the order they were added.
    #[graphql(deprecation = "Use lines: the same lines as CartLine, with unitPrice, named like Order.lines.")]
    async fn items(&self) -> Vec<CartItemGql> {
        self.cart.items.iter().map(|i| CartItemGql::new(self.key, i)).collect()
    }
    /// Total units in the cart.
    #[graphql(deprecation = "Use totalQuantity.")]
    async fn item_count(&self) -> i32 {
        self.cart.items.iter().map(|i| i.quantity).sum()
    }
    /// `null` for an empty cart, or one priced in more than one currency.
    #[graphql(deprecation = "Use cost.total.")]
    async fn total(&self, ctx: &Context<'_>) -> Result<Option<MoneyGql>> {
        self.sum(ctx).await?.as_ref().map(MoneyGql::try_from).transpose()
    }
}

#[derive(Default)]
pub struct CartQuery;

#[Object]
impl CartQuery {
    /// The signed-in user's cart (a guest's cart: `node(id:)` with its id).
    async fn cart(&self, ctx: &Context<'_>) -> Result<CartGql> {
        let key = CartKey::User(user(ctx)?.id);
        Ok(CartGql::new(key, carts::load(&state(ctx).mongo, key).await.map_err(AppError::from)?))
    }
}

/// Units of a product to put in a cart.
#[derive(InputObject)]
pub struct CartLineInput {
    /// The product's stock-keeping unit.
    pub sku: String,
    /// Units to add to what the cart holds of it (1 to 99 in all).
    pub quantity: i32,
}

/// A new quantity for a line of the cart.
#[derive(InputObject)]
pub struct CartLineUpdateInput {
    /// The line's `id`.
    pub id: ID,
    /// The line's new number of units (1 to 99), or 0 to take it out.
    pub quantity: i32,
}

/// A cart to start.
#[derive(InputObject, Default)]
pub struct CartCreateInput {
    /// What to put in it (at most 50 lines).
    #[graphql(default)]
    pub lines: Vec<CartLineInput>,
}

#[derive(Default)]
pub struct CartMutation;

fn sku(raw: &str) -> Result<Sku, Refusal> {
    Sku::parse(raw).map_err(Refusal::invalid(UserErrorCode::InvalidSku))
}
fn qty(raw: i32) -> Result<Quantity, Refusal> {
    Quantity::parse(raw as i64).map_err(Refusal::invalid(UserErrorCode::InvalidQuantity))
}

/// Tells `myCart` subscribers on every instance, without holding up the answer.
pub fn announce_cart(s: &ApiState, user_id: Uuid) {
    let feed = s.feed.clone();
    tokio::spawn(async move { feed.cart_changed(user_id).await });
}

/// Counts one cart mutation against the budget of its signed-in user (`CART_WRITES_MAX_PER_USER`),
/// or, for a guest, of the client's address.
async fn count_write(ctx: &Context<'_>) -> Result<()> {
    let s = state(ctx);
    let limits = s.config.api.auth.rate_limits;
    let key = match user(ctx) {
        Ok(u) => format!("cart:user:{}", u.id),
        Err(_) => format!("cart:addr:{}", client_addr(ctx)),
    };
    crate::auth::rate_limit::hit(&s.pool, &key, limits.cart_writes_per_user, limits.window).await?;
    Ok(())
}

/// The cart `id` names for the caller: their own account's cart, or a guest's by its key.
/// Anything else (malformed, someone else's) is refused alike with `CART_NOT_FOUND`.
fn cart_key(ctx: &Context<'_>, id: &ID) -> Result<CartKey, UserErrorGql> {
    match NodeId::decode(id) {
        Some(NodeId::Cart(CartKey::User(owner))) if user(ctx).is_ok_and(|u| u.id == owner) => {
            Ok(CartKey::User(owner))
        }
        Some(NodeId::Cart(key @ CartKey::Guest(_))) => Ok(key),
        _ => Err(cart_not_found()),
    }
}

fn cart_not_found() -> UserErrorGql {
    Refusal::new(UserErrorCode::CartNotFound, "There is no such cart.").into()
}

/// The path of a line's field in a batch argument: `["lines", "2", "quantity"]`.
fn at(argument: &str, index: usize, field: Option<&str>) -> Option<Vec<String>> {
    let mut path = vec![argument.to_string(), index.to_string()];
    path.extend(field.map(String::from));
    Some(path)
}

/// The input field a refusal of a line's change concerns.
fn line_field(code: UserErrorCode, by_id: bool) -> Option<&'static str> {
    match code {
        UserErrorCode::InvalidSku | UserErrorCode::UnknownSku => Some("sku"),
        UserErrorCode::InvalidQuantity | UserErrorCode::LineQuantityTooLarge => Some("quantity"),
        UserErrorCode::NotInCart if by_id => Some("id"),
        UserErrorCode::NotInCart => Some("sku"),
        _ => None,
    }
}

/// The answer to a cart mutation: `outcome`'s cart and refusals (naming `argument`'s entries by
/// index when it is a batch), announced to `myCart` when it changed.
fn answer(ctx: &Context<'_>, key: CartKey, outcome: Outcome, argument: Option<(&str, bool)>) -> CartPayload {
    match outcome {
        Outcome::Changed(cart) => {
            if let CartKey::User(user_id) = key {
                announce_cart(state(ctx), user_id);
            }
            CartPayload { cart: Some(CartGql::new(key, cart)), user_errors: Vec::new() }
        }
        Outcome::Refused { at: index, refusal, cart } => {
            let code = refusal.code;
            let mut error = UserErrorGql::from(refusal);
            if let Some((argument, by_id)) = argument {
                // `lineIds` entries are ids themselves; `lines` entries have fields.
                let field = if argument == "lineIds" { None } else { line_field(code, by_id) };
                error.field = at(argument, index, field);
            }
            CartPayload { cart: Some(CartGql::new(key, cart)), user_errors: vec![error] }
        }
    }
}

/// The cart as it is, with `user_errors`: nothing was changed.
async fn refused(
    ctx: &Context<'_>,
    key: Option<CartKey>,
    user_errors: Vec<UserErrorGql>,
) -> Result<CartPayload> {
    let cart = match key {
        Some(key) if ctx.look_ahead().field("cart").exists() => {
            carts::find(&state(ctx).mongo, key).await.map_err(AppError::from)?.map(|c| CartGql::new(key, c))
        }
        _ => None,
    };
    Ok(CartPayload { cart, user_errors })
}

/// `changes` applied to the cart `key`, all or none.
async fn change(
    ctx: &Context<'_>,
    key: CartKey,
    changes: &[Change],
    argument: Option<(&str, bool)>,
) -> Result<CartPayload> {
    match service::change_all(&state(ctx).mongo, key, changes).await {
        Ok(outcome) => Ok(answer(ctx, key, outcome, argument)),
        Err(AppError::NotFound(_)) => refused(ctx, None, vec![cart_not_found()]).await,
        Err(e) => Err(e.into()),
    }
}

/// A batch mutation on the cart `cart_id`: counted, the cart's key checked, `parse` turning the
/// batch into changes (or the refusals of its malformed entries), then all of them applied or none.
async fn batch(
    ctx: &Context<'_>,
    cart_id: &ID,
    argument: (&str, bool),
    parse: impl FnOnce(CartKey) -> Result<Vec<Change>, Vec<UserErrorGql>>,
) -> Result<CartPayload> {
    count_write(ctx).await?;
    let key = match cart_key(ctx, cart_id) {
        Ok(key) => key,
        Err(e) => return refused(ctx, None, vec![e]).await,
    };
    match parse(key) {
        Ok(changes) => change(ctx, key, &changes, Some(argument)).await,
        Err(errors) => refused(ctx, Some(key), errors).await,
    }
}

/// Each of `lines` as a change, or the refusals of those that are malformed (by index).
fn additions(lines: &[CartLineInput], argument: &str) -> Result<Vec<Change>, Vec<UserErrorGql>> {
    let mut changes = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match (sku(&line.sku), qty(line.quantity)) {
            (Ok(s), Ok(q)) => changes.push(Change::Add(s, q)),
            (a, b) => errors.extend([a.err(), b.err()].into_iter().flatten().map(|r| {
                let field = line_field(r.code, false);
                UserErrorGql { field: at(argument, i, field), ..r.into() }
            })),
        }
    }
    if errors.is_empty() {
        Ok(changes)
    } else {
        Err(errors)
    }
}

/// The product of a line id of the cart `key`, if the id is one.
fn line_sku(id: &ID, key: CartKey) -> Option<Sku> {
    match NodeId::decode(id)? {
        NodeId::CartLine(k, sku) | NodeId::CartItem(k, sku) if k == key => Sku::parse(&sku).ok(),
        _ => None,
    }
}

fn not_in_cart() -> Refusal {
    Refusal::new(UserErrorCode::NotInCart, "That line is not in the cart.")
}

/// The account's cart for a signed-in caller (the old single-product mutations).
async fn apply(ctx: &Context<'_>, change: Change) -> Result<CartPayload> {
    let key = CartKey::User(user(ctx)?.id);
    self::change(ctx, key, &[change], None).await
}

async fn refused_one(
    ctx: &Context<'_>,
    errors: impl IntoIterator<Item = Option<Refusal>>,
) -> Result<CartPayload> {
    let key = CartKey::User(user(ctx)?.id);
    refused(ctx, Some(key), errors.into_iter().flatten().map(Into::into).collect()).await
}

#[Object]
impl CartMutation {
    /// Starts a cart with `input.lines` (all or none). A guest gets a new guest cart: keep its
    /// `id`, the only key to it, and pass it to `signIn`/`signUp` (`input.cartId`) to merge it
    /// into the account's cart. A signed-in buyer has one cart: the lines are added to it, and it
    /// is returned. Limited like every cart change (per account, or per client address).
    async fn cart_create(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to put in the cart.", default)] input: CartCreateInput,
    ) -> Result<CartPayload> {
        count_write(ctx).await?;
        let changes = match additions(&input.lines, "lines") {
            Ok(changes) => changes,
            Err(errors) => {
                let errors = errors.into_iter().map(|e| e.within("input")).collect();
                return Ok(CartPayload { cart: None, user_errors: errors });
            }
        };
        let argument = Some(("lines", false));
        let mut payload = match user(ctx) {
            Ok(u) => change(ctx, CartKey::User(u.id), &changes, argument).await?,
            Err(_) => {
                let (key, outcome) = service::create_guest(&state(ctx).mongo, &changes).await?;
                match outcome {
                    // A refused guest cart was never saved: there is none to show.
                    Outcome::Refused { .. } => {
                        CartPayload { cart: None, ..answer(ctx, key, outcome, argument) }
                    }
                    Outcome::Changed(_) => answer(ctx, key, outcome, argument),
                }
            }
        };
        payload.user_errors = payload.user_errors.into_iter().map(|e| e.within("input")).collect();
        Ok(payload)
    }

    /// Adds `lines` to the cart, all or none: a product already in it gets the units added
    /// (at most 99 a line). Refusals name the line by its index (`["lines", "1", "quantity"]`),
    /// and the cart comes back unchanged.
    async fn cart_lines_add(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The cart's id (an account's or a guest's).")] cart_id: ID,
        #[graphql(desc = "Products and units to add (at most 50).", validator(max_items = 50))] lines: Vec<
            CartLineInput,
        >,
    ) -> Result<CartPayload> {
        batch(ctx, &cart_id, ("lines", false), |_| additions(&lines, "lines")).await
    }

    /// Sets the quantity of lines of the cart, all or none; a quantity of 0 takes the line out.
    /// Refusals name the line by its index (`["lines", "0", "id"]` for a line not in the cart).
    async fn cart_lines_update(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The cart's id (an account's or a guest's).")] cart_id: ID,
        #[graphql(desc = "Lines and their new quantities (at most 50).", validator(max_items = 50))]
        lines: Vec<CartLineUpdateInput>,
    ) -> Result<CartPayload> {
        batch(ctx, &cart_id, ("lines", true), |key| {
            let mut changes = Vec::new();
            let mut errors = Vec::new();
            for (i, line) in lines.iter().enumerate() {
                let Some(sku) = line_sku(&line.id, key) else {
                    errors.push(UserErrorGql { field: at("lines", i, Some("id")), ..not_in_cart().into() });
                    continue;
                };
                match (line.quantity, qty(line.quantity)) {
                    (0, _) => changes.push(Change::Remove(sku)),
                    (_, Ok(q)) => changes.push(Change::Update(sku, q)),
                    (_, Err(r)) => {
                        errors.push(UserErrorGql { field: at("lines", i, Some("quantity")), ..r.into() })
                    }
                }
            }
            if errors.is_empty() {
                Ok(changes)
            } else {
                Err(errors)
            }
        })
        .await
    }

    /// Takes lines out of the cart, all or none. Refusals name the id by its index
    /// (`["lineIds", "0"]`).
    async fn cart_lines_remove(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The cart's id (an account's or a guest's).")] cart_id: ID,
        #[graphql(desc = "The lines' ids (at most 50).", validator(max_items = 50))] line_ids: Vec<ID>,
    ) -> Result<CartPayload> {
        batch(ctx, &cart_id, ("lineIds", true), |key| {
            let mut changes = Vec::new();
            let mut errors = Vec::new();
            for (i, id) in line_ids.iter().enumerate() {
                match line_sku(id, key) {
                    Some(sku) => changes.push(Change::Remove(sku)),
                    None => {
                        errors.push(UserErrorGql { field: at("lineIds", i, None), ..not_in_cart().into() })
                    }
                }
            }
            if errors.is_empty() {
                Ok(changes)
            } else {
                Err(errors)
            }
        })
        .await
    }

    /// Adds units of a product (1 to 99 per line) to the signed-in buyer's cart.
    #[graphql(deprecation = "Use cartLinesAdd: many lines at once, and guest carts too.")]
    async fn add_to_cart(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product's stock-keeping unit.")] sku: String,
        #[graphql(desc = "Units to add to what the cart holds.")] quantity: i32,
    ) -> Result<CartPayload> {
        count_write(ctx).await?;
        match (self::sku(&sku), qty(quantity)) {
            (Ok(sku), Ok(q)) => apply(ctx, Change::Add(sku, q)).await,
            (a, b) => refused_one(ctx, [a.err(), b.err()]).await,
        }
    }
    /// Sets how many units of a product the signed-in buyer's cart holds (1 to 99).
    #[graphql(deprecation = "Use cartLinesUpdate: many lines at once, by line id, and guest carts too.")]
    async fn update_cart_item(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product's stock-keeping unit.")] sku: String,
        #[graphql(desc = "The new number of units.")] quantity: i32,
    ) -> Result<CartPayload> {
        count_write(ctx).await?;
        match (self::sku(&sku), qty(quantity)) {
            (Ok(sku), Ok(q)) => apply(ctx, Change::Update(sku, q)).await,
            (a, b) => refused_one(ctx, [a.err(), b.err()]).await,
        }
    }
    /// Takes a product out of the signed-in buyer's cart.
    #[graphql(deprecation = "Use cartLinesRemove: many lines at once, by line id, and guest carts too.")]
    async fn remove_from_cart(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product's stock-keeping unit.")] sku: String,
    ) -> Result<CartPayload> {
        count_write(ctx).await?;
        match self::sku(&sku) {
            Ok(sku) => apply(ctx, Change::Remove(sku)).await,
            Err(e) => refused_one(ctx, [Some(e)]).await,
        }
    }
    /// Empties the signed-in buyer's cart.
    async fn clear_cart(&self, ctx: &Context<'_>) -> Result<CartPayload> {
        count_write(ctx).await?;
        apply(ctx, Change::Clear).await
    }
}
