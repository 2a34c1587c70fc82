// @ts-check
// An example storefront on the ecommerce-saga API: browse, fill a guest cart, sign up or in (the
// guest cart merges into the account's), check out with an address, and follow the order's saga
// live until it is confirmed or cancelled. urql with Graphcache keeps a normalized cache: what a
// mutation or an event returns updates every view of the same object by its id. The operations are
// in operations.graphql; their types come from GraphQL Code Generator (generated.ts).
import { Client, fetchExchange, subscriptionExchange } from "@urql/core";
import { cacheExchange } from "@urql/exchange-graphcache";
import { createClient as createWsClient } from "graphql-ws";

/** @typedef {import("./generated").CartFieldsFragment} Cart */
/** @typedef {import("./generated").OrderFieldsFragment} Order */
/** @typedef {{ code: string, field?: readonly string[] | null, message: string }} UserError */

const params = new URLSearchParams(location.search);
const API = params.get("api") || location.origin;
const CART_KEY = "ecommerce-saga.guestCart";

// The operations, as GraphQL Code Generator typed them: each sent with the fragments it spreads.
const source = await (await fetch(new URL("./operations.graphql", import.meta.url))).text();
/** @type {Map<string, string>} */
const definitions = new Map();
for (const block of source.split(/\n(?=(?:query|mutation|subscription|fragment) )/)) {
  const name = block.match(/^(?:query|mutation|subscription|fragment) (\w+)/m);
  if (name) definitions.set(name[1], block.replace(/^#.*$/gm, "").trim());
}
/** The operation `name` with every fragment it spreads, transitively. @param {string} name */
function operation(name) {
  const wanted = [name];
  for (let i = 0; i < wanted.length; i++) {
    for (const [, spread] of (definitions.get(wanted[i]) || "").matchAll(/\.\.\.(\w+)/g)) {
      if (!wanted.includes(spread)) wanted.push(spread);
    }
  }
  const missing = wanted.find((n) => !definitions.has(n));
  if (missing) throw new Error(`operations.graphql has no ${missing}`);
  return wanted.map((n) => definitions.get(n)).join("\n");
}
const Q = {
  products: operation("Products"),
  guestCart: operation("GuestCart"),
  cartCreate: operation("CartCreate"),
  cartLinesAdd: operation("CartLinesAdd"),
  signUp: operation("SignUp"),
  signIn: operation("SignIn"),
  placeOrder: operation("PlaceOrder"),
  cancelOrder: operation("CancelOrder"),
  orderEvents: operation("OrderEvents"),
  myCart: operation("MyCart"),
};

/** @type {string | null} */
let token = null;
/** @type {string | null} */
let cartId = localStorage.getItem(CART_KEY);
/** @type {Cart | null} */
let cart = null;
/** @type {Order | null} */
let order = null;

/** @returns {Record<string, string>} */
const authorization = () => (token ? { authorization: `Bearer ${token}` } : {});

// Objects without an id are values of their parent, not cache entries.
const embedded = () => null;
const ws = createWsClient({
  url: `${API.replace(/^http/, "ws")}/graphql/ws`,
  lazy: true,
  connectionParams: authorization,
});
const client = new Client({
  url: `${API}/graphql`,
  fetchOptions: () => ({ headers: authorization() }),
  exchanges: [
    cacheExchange({
      keys: {
        Money: embedded, CartCost: embedded, ShippingAddress: embedded, UserError: embedded,
        CartPayload: embedded, OrderPayload: embedded, SessionPayload: embedded, AuthSession: embedded,
        ProductConnection: embedded,
      },
    }),
    fetchExchange,
    subscriptionExchange({
      forwardSubscription: (request) => ({
        subscribe: (sink) => ({ unsubscribe: ws.subscribe({ ...request, query: request.query || "" }, sink) }),
      }),
    }),
  ],
});

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const status = (/** @type {string} */ text) => ($("status").textContent = text);

/**
 * Runs a mutation or query; a top-level error (the network, authentication, a limit) is shown and
 * thrown, user errors are the caller's to show by field.
 * @param {string} doc @param {Record<string, unknown>} variables
 */
async function run(doc, variables = {}) {
  const op = doc.trimStart().startsWith("mutation") ? client.mutation(doc, variables) : client.query(doc, variables, { requestPolicy: "network-only" });
  const result = await op.toPromise();
  if (result.error) {
    status(result.error.message);
    throw result.error;
  }
  return result.data;
}

/** Shows each user error beside its field (`[data-field="input.shippingAddress.postalCode"]`), the
 * rest in the form's general error line. @param {HTMLElement} form @param {readonly UserError[]} errors */
function showErrors(form, errors) {
  form.querySelectorAll("[data-field]").forEach((el) => (el.textContent = ""));
  for (const e of errors) {
    const path = (e.field || []).join(".");
    const spot = form.querySelector(`[data-field="${path}"]`) || form.querySelector('[data-field=""]');
    if (spot) spot.textContent = `${e.message} (${e.code})`;
  }
}

/** @param {{ amount: string, currencyCode: string } | null | undefined} m */
const money = (m) => (m ? `${m.amount} ${m.currencyCode}` : "—");

function renderCart() {
  const list = $("cart-lines");
  list.replaceChildren(
    ...(cart?.lines || []).map((l) => {
      const li = document.createElement("li");
      li.dataset.sku = l.sku;
      li.textContent = `${l.quantity} × ${l.product?.name || l.sku} = ${money(l.lineTotal)}`;
      return li;
    }),
  );
  $("cart-count").textContent = String(cart?.totalQuantity || 0);
  $("cart-total").textContent = money(cart?.cost?.total);
  $("cart-owner").textContent = token ? "your account's cart" : cartId ? "guest cart" : "no cart yet";
}

/** @param {readonly { id: string, sequence: number, type: string }[]} events */
function renderOrder(events = []) {
  $("order").hidden = !order;
  if (!order) return;
  $("order-status").textContent = order.status;
  $("order-status").dataset.status = order.status;
  $("order-reason").textContent = order.cancelReason || "";
  $("order-total").textContent = money(order.total);
  $("order-ship").textContent = order.shippingAddress ? `${order.shippingAddress.name}, ${order.shippingAddress.city} (${order.shippingAddress.countryCode})` : "";
  const list = $("order-events");
  for (const e of events) {
    if (list.querySelector(`[data-id="${e.id}"]`)) continue;
    const li = document.createElement("li");
    li.dataset.id = e.id;
    li.textContent = e.type;
    list.append(li);
  }
  /** @type {HTMLButtonElement} */ ($("cancel")).disabled = order.status !== "PENDING";
}

async function loadProducts() {
  const data = /** @type {import("./generated").ProductsQuery} */ (await run(Q.products));
  $("products").replaceChildren(
    ...data.products.nodes.map((p) => {
      const li = document.createElement("li");
      const add = document.createElement("button");
      add.textContent = "Add";
      add.dataset.sku = p.sku;
      add.addEventListener("click", () => addToCart(p.sku));
      li.append(`${p.name} — ${money(p.price)} (${p.stockLevel} left) `, add);
      return li;
    }),
  );
}

// Cart changes run one after the other: the first makes the guest cart whose id the next needs.
let cartChanges = Promise.resolve();
/** @param {string} sku */
function addToCart(sku) {
  cartChanges = cartChanges.then(() => addLine(sku)).catch(() => {});
  return cartChanges;
}

/** @param {string} sku */
async function addLine(sku) {
  const lines = [{ sku, quantity: 1 }];
  if (!cartId) {
    const data = /** @type {import("./generated").CartCreateMutation} */ (await run(Q.cartCreate, { input: { lines } }));
    showErrors($("cart-section"), data.cartCreate.userErrors);
    if (data.cartCreate.cart) {
      cart = data.cartCreate.cart;
      cartId = cart.id;
      if (!token) localStorage.setItem(CART_KEY, cartId);
    }
  } else {
    const data = /** @type {import("./generated").CartLinesAddMutation} */ (await run(Q.cartLinesAdd, { cartId, lines }));
    showErrors($("cart-section"), data.cartLinesAdd.userErrors);
    if (data.cartLinesAdd.cart) cart = data.cartLinesAdd.cart;
  }
  renderCart();
}

/** @param {"signUp" | "signIn"} how */
async function authenticate(how) {
  const form = $("auth");
  const input = {
    email: /** @type {HTMLInputElement} */ ($("email")).value,
    password: /** @type {HTMLInputElement} */ ($("password")).value,
    cartId: token ? null : cartId,
  };
  const data = /** @type {import("./generated").SignUpMutation & import("./generated").SignInMutation} */ (
    await run(how === "signUp" ? Q.signUp : Q.signIn, { input })
  );
  const payload = how === "signUp" ? data.signUp : data.signIn;
  showErrors(form, payload.userErrors);
  if (!payload.session) return;
  token = payload.session.accessToken;
  localStorage.removeItem(CART_KEY);
  cart = payload.cart || null;
  cartId = cart ? cart.id : null;
  $("who").textContent = payload.session.user.email;
  /** @type {HTMLInputElement} */ ($("contact")).value = payload.session.user.email;
  form.hidden = true;
  $("checkout").hidden = false;
  renderCart();
  // The account's cart, live: changed in another tab, or by an order (a cancelled one's units
  // come back).
  client.subscription(Q.myCart, {}).subscribe((result) => {
    if (result.error) return status(result.error.message);
    cart = /** @type {import("./generated").MyCartSubscription} */ (result.data).myCart;
    cartId = cart.id;
    renderCart();
  });
}

/** @param {string} orderId */
function follow(orderId) {
  /** @type {{ id: string, sequence: number, type: string }[]} */
  const events = [];
  client.subscription(Q.orderEvents, { orderId }).subscribe((result) => {
    if (result.error) return status(result.error.message);
    const e = /** @type {import("./generated").OrderEventsSubscription} */ (result.data).orderEvents;
    events.push(e);
    // The event links to its order: the cached order (and this view) updates by its id.
    order = e.order;
    renderOrder(events);
  });
}

async function checkout(/** @type {SubmitEvent} */ event) {
  event.preventDefault();
  const field = (/** @type {string} */ id) => /** @type {HTMLInputElement} */ ($(id)).value;
  const input = {
    idempotencyKey: crypto.randomUUID(),
    paymentToken: field("payment"),
    email: field("contact"),
    shippingAddress: {
      name: field("name"), line1: field("line1"), city: field("city"),
      postalCode: field("postal"), countryCode: field("country"),
    },
  };
  const data = /** @type {import("./generated").PlaceOrderMutation} */ (await run(Q.placeOrder, { input }));
  showErrors($("checkout"), data.placeOrder.userErrors);
  if (data.placeOrder.cart) cart = data.placeOrder.cart;
  renderCart();
  if (!data.placeOrder.order) return;
  order = data.placeOrder.order;
  $("order-events").replaceChildren();
  renderOrder();
  follow(order.id);
}

async function cancel() {
  if (!order) return;
  const data = /** @type {import("./generated").CancelOrderMutation} */ (await run(Q.cancelOrder, { orderId: order.id }));
  showErrors($("order"), data.cancelOrder.userErrors);
  if (data.cancelOrder.order) order = data.cancelOrder.order;
  renderOrder();
}

$("sign-up").addEventListener("click", (e) => (e.preventDefault(), authenticate("signUp")));
$("sign-in").addEventListener("click", (e) => (e.preventDefault(), authenticate("signIn")));
$("checkout").addEventListener("submit", checkout);
$("cancel").addEventListener("click", cancel);

await loadProducts();
if (cartId) {
  const data = /** @type {import("./generated").GuestCartQuery} */ (await run(Q.guestCart, { id: cartId }));
  const node = data.node;
  // A guest cart merged elsewhere (or never created) names nothing any more: start afresh.
  cart = node && "lines" in node ? /** @type {Cart} */ (node) : null;
  if (!cart) {
    localStorage.removeItem(CART_KEY);
    cartId = null;
  }
}
renderCart();
status("ready");
