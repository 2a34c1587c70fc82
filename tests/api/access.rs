//! Access control, table-driven: every root field of the schema (read from introspection, so a
//! new field fails this test until it is classified here) is called anonymously and as user A
//! against user B's resources. Nested fields are reachable only through these roots.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::helpers::{code, spawn_app, TestApp, User};

/// What a field may do for a caller who is not the resource's owner.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Needs no account and shows nothing of anyone's (catalog, sign-in).
    Public,
    /// Needs an account; acts only on the caller's own data, never names another user's.
    Own,
    /// Takes a resource id; another user's id is absent, exactly like one that never existed:
    /// `null`, a `NOT_FOUND` error or an `ORDER_NOT_FOUND` user error (never `FORBIDDEN`, which
    /// would reveal that it exists).
    ById,
    /// Operators only (every user's sagas): a buyer gets `FORBIDDEN`.
    Operator,
    /// Takes a cart id and needs no account (a guest cart's id is its key): another user's cart
    /// is absent for anyone, a `CART_NOT_FOUND` user error like a cart that never existed.
    ByCart,
}

struct Case {
    root: &'static str,
    field: &'static str,
    rule: Rule,
    /// The document A sends; `$bob_order` is B's order id.
    doc: &'static str,
}

const CASES: &[Case] = &[
    Case { root: "Query", field: "me", rule: Rule::Own, doc: "{ me { id email } }" },
    Case {
        root: "Query",
        field: "node",
        rule: Rule::ById,
        doc: "query($bob_order: ID!) { node(id: $bob_order) { id ... on Order { status } } }",
    },
    Case {
        root: "Query",
        field: "nodes",
        rule: Rule::ById,
        doc: "query($bob_order: ID!, $bob_saga: ID!) { nodes(ids: [$bob_order, $bob_saga]) { id } }",
    },
    Case { root: "Query", field: "products", rule: Rule::Public, doc: "{ products { nodes { sku stockLevel } } }" },
    Case { root: "Query", field: "product", rule: Rule::Public, doc: "{ product(sku: \"MUG-001\") { sku } }" },
    Case { root: "Query", field: "cart", rule: Rule::Own, doc: "{ cart { itemCount items { sku quantity } } }" },
    Case {
        root: "Query",
        field: "order",
        rule: Rule::ById,
        doc: "query($bob_order: ID!) { order(id: $bob_order) { id status saga { id events { type } } } }",
    },
    Case { root: "Query", field: "orders", rule: Rule::Own, doc: "{ orders { nodes { id idempotencyKey } } }" },
    Case {
        root: "Mutation",
        field: "register",
        rule: Rule::Public,
        doc: "mutation { register(email: \"new-acl-user@example.com\", password: \"long enough pw\") { user { id } } }",
    },
    Case {
        root: "Mutation",
        field: "login",
        rule: Rule::Public,
        doc: "mutation { login(email: \"nobody@example.com\", password: \"whatever pw\") { accessToken } }",
    },
    Case {
        root: "Mutation",
        field: "signUp",
        rule: Rule::Public,
        doc: "mutation { signUp(input: { email: \"new-acl-user-2@example.com\", password: \"long enough pw\" }) { session { user { id } } } }",
    },
    Case {
        root: "Mutation",
        field: "signIn",
        rule: Rule::Public,
        doc: "mutation { signIn(input: { email: \"nobody@example.com\", password: \"whatever pw\" }) { userErrors { code } } }",
    },
    Case {
        root: "Mutation",
        field: "refreshSession",
        rule: Rule::Public,
        doc: "mutation { refreshSession(refreshToken: \"rt_not-a-real-token\") { accessToken } }",
    },
    Case {
        root: "Mutation",
        field: "addToCart",
        rule: Rule::Own,
        doc: "mutation { addToCart(sku: \"TEE-002\", quantity: 1) { cart { itemCount } } }",
    },
    Case {
        root: "Mutation",
        field: "updateCartItem",
        rule: Rule::Own,
        doc: "mutation { updateCartItem(sku: \"TEE-002\", quantity: 3) { cart { itemCount } } }",
    },
    Case {
        root: "Mutation",
        field: "removeFromCart",
        rule: Rule::Own,
        doc: "mutation { removeFromCart(sku: \"TEE-002\") { cart { itemCount } } }",
    },
    Case { root: "Mutation", field: "clearCart", rule: Rule::Own, doc: "mutation { clearCart { cart { itemCount } } }" },
    Case {
        root: "Mutation",
        field: "cartCreate",
        rule: Rule::Public,
        doc: "mutation { cartCreate(input: { lines: [{ sku: \"MUG-001\", quantity: 1 }] }) { cart { id totalQuantity } userErrors { code } } }",
    },
    Case {
        root: "Mutation",
        field: "cartLinesAdd",
        rule: Rule::ByCart,
        doc: "mutation($bob_cart: ID!) { cartLinesAdd(cartId: $bob_cart, lines: [{ sku: \"TEE-002\", quantity: 1 }]) { cart { id lines { sku } } userErrors { code } } }",
    },
    Case {
        root: "Mutation",
        field: "cartLinesUpdate",
        rule: Rule::ByCart,
        doc: "mutation($bob_cart: ID!, $bob_line: ID!) { cartLinesUpdate(cartId: $bob_cart, lines: [{ id: $bob_line, quantity: 5 }]) { cart { id lines { sku } } userErrors { code } } }",
    },
    Case {
        root: "Mutation",
        field: "cartLinesRemove",
        rule: Rule::ByCart,
        doc: "mutation($bob_cart: ID!, $bob_line: ID!) { cartLinesRemove(cartId: $bob_cart, lineIds: [$bob_line]) { cart { id lines { sku } } userErrors { code } } }",
    },
    Case {
        root: "Mutation",
        field: "placeOrder",
        rule: Rule::Own,
        // B's idempotency key: keys are per user, so this is a new order of A's, not B's.
        doc: "mutation { placeOrder(idempotencyKey: \"bob-acl-1\", paymentToken: \"tok_visa\") { order { id } } }",
    },
    Case {
        root: "Mutation",
        field: "cancelOrder",
        rule: Rule::ById,
        doc: "mutation($bob_order: ID!) { cancelOrder(orderId: $bob_order) { order { id status } userErrors { code } } }",
    },
    Case {
        root: "Mutation",
        field: "requestRefund",
        rule: Rule::ById,
        doc: "mutation($bob_order: ID!) { requestRefund(orderId: $bob_order, reason: \"mine\") { order { id status } userErrors { code } } }",
    },
    Case {
        root: "Subscription",
        field: "orderEvents",
        rule: Rule::ById,
        doc: "subscription($bob_order: ID!) { orderEvents(orderId: $bob_order) { type } }",
    },
    Case {
        root: "Subscription",
        field: "orderEvents",
        rule: Rule::ById,
        doc: "subscription($bob_order: ID!) { orderEvents(orderId: $bob_order, saga: REFUND) { type } }",
    },
    Case { root: "Subscription", field: "myOrders", rule: Rule::Own, doc: "subscription { myOrders { id status } }" },
    Case {
        root: "Subscription",
        field: "myCart",
        rule: Rule::Own,
        doc: "subscription { myCart { id itemCount items { sku } } }",
    },
    Case {
        root: "Query",
        field: "recentSagas",
        rule: Rule::Operator,
        doc: "{ recentSagas { id orderId status events { type } } }",
    },
    Case {
        root: "Query",
        field: "saga",
        rule: Rule::Operator,
        doc: "query($bob_saga: ID!) { saga(id: $bob_saga) { id orderId events { type } } }",
    },
    Case {
        root: "Mutation",
        field: "retrySagaStep",
        rule: Rule::Operator,
        doc: "mutation($bob_saga: ID!) { retrySagaStep(input: { sagaId: $bob_saga, reason: \"acl\", idempotencyKey: \"acl\" }) { saga { id status } } }",
    },
    Case {
        root: "Mutation",
        field: "resumeSaga",
        rule: Rule::Operator,
        doc: "mutation($bob_saga: ID!) { resumeSaga(input: { sagaId: $bob_saga, reason: \"acl\", idempotencyKey: \"acl\" }) { saga { id status } } }",
    },
    Case {
        root: "Mutation",
        field: "forceCompensateSaga",
        rule: Rule::Operator,
        doc: "mutation($bob_saga: ID!) { forceCompensateSaga(input: { sagaId: $bob_saga, reason: \"acl\", idempotencyKey: \"acl\" }) { saga { id status } } }",
    },
    Case {
        root: "Mutation",
        field: "forceCompleteSaga",
        rule: Rule::Operator,
        doc: "mutation($bob_saga: ID!) { forceCompleteSaga(input: { sagaId: $bob_saga, reason: \"acl\", idempotencyKey: \"acl\" }) { saga { id status } } }",
    },
    Case {
        root: "Mutation",
        field: "bulkRepairSagas",
        rule: Rule::Operator,
        doc: "mutation { bulkRepairSagas(input: { filter: { status: COMPLETED }, action: FORCE_COMPENSATE, reason: \"acl\", idempotencyKey: \"acl\", dryRun: false }) { matched applied } }",
    },
    Case {
        root: "Query",
        field: "sagas",
        rule: Rule::Operator,
        doc: "{ sagas(first: 5) { totalCount edges { node { id orderId auditLog { action } } } } }",
    },
    Case {
        root: "Subscription",
        field: "sagaChanges",
        rule: Rule::Operator,
        doc: "subscription { sagaChanges { id orderId status } }",
    },
    // Last: it ends A's session.
    Case { root: "Mutation", field: "logout", rule: Rule::Own, doc: "mutation { logout }" },
];

/// Root type name → field names, with the argument names of each field.
async fn schema_roots(app: &TestApp) -> Vec<(String, String, Vec<String>)> {
    // Deprecated fields and arguments still answer, so they are classified too.
    let q = "{ __schema {
        queryType { name fields(includeDeprecated: true) { name args(includeDeprecated: true) { name } } }
        mutationType { name fields(includeDeprecated: true) { name args(includeDeprecated: true) { name } } }
        subscriptionType { name fields(includeDeprecated: true) { name args(includeDeprecated: true) { name } } } } }";
    let s = app.data(None, q, json!({})).await["__schema"].clone();
    let mut out = Vec::new();
    for root in ["queryType", "mutationType", "subscriptionType"] {
        let t = &s[root];
        for f in t["fields"].as_array().unwrap() {
            let args =
                f["args"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap().into()).collect();
            out.push((t["name"].as_str().unwrap().into(), f["name"].as_str().unwrap().into(), args));
        }
    }
    out
}

/// B's resources a case's document may name.
struct Bob<'a> {
    order: &'a str,
    saga: &'a str,
    cart: &'a str,
    line: &'a str,
}

/// The variables a case's document uses.
fn variables(case: &Case, bob: &Bob) -> Value {
    let vars =
        json!({ "bob_order": bob.order, "bob_saga": bob.saga, "bob_cart": bob.cart, "bob_line": bob.line });
    let used: serde_json::Map<String, Value> = vars
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| case.doc.contains(&format!("${k}")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Value::Object(used)
}

/// Everything A sends for a case: the document, its variables, and the order id `orderEvents` is
/// subscribed to.
fn request_text(case: &Case, bob: &Bob) -> String {
    let extra = if case.field == "orderEvents" { bob.order } else { "" };
    format!("{} {} {extra}", case.doc, variables(case, bob))
}

/// Runs a case's document as `token` (subscriptions over the websocket); returns the errors'
/// codes and the data, as one JSON value for inspection.
async fn run(app: &TestApp, case: &Case, token: Option<&str>, bob: &Bob<'_>) -> Value {
    let vars = variables(case, bob);
    if case.root != "Subscription" {
        return app.gql(token, case.doc, vars).await;
    }
    let mut ws = app.ws(token).await;
    ws.expect_ack().await;
    if case.field == "orderEvents" {
        ws.subscribe(bob.order).await;
        return match ws.collect().await {
            Ok(events) => json!({ "data": events }),
            Err(errors) => json!({ "errors": errors }),
        };
    }
    ws.start("1", case.doc, vars).await;
    // Refused at once; an accepted stream would report changes only, so read just the first answer.
    match tokio::time::timeout(std::time::Duration::from_secs(5), ws.next_payload()).await {
        Ok(Some(p)) => p,
        Ok(None) => json!({ "data": "completed" }),
        Err(_) => json!({ "data": "streaming" }),
    }
}

/// Whether an answer says the resource asked for is not there (and nothing else went wrong).
fn absent(body: &Value, field: &str) -> bool {
    let answer = &body["data"][field];
    if body.get("errors").is_some() {
        return code(body) == "NOT_FOUND" && answer.is_null();
    }
    match answer {
        Value::Null => true,
        Value::Array(items) => items.iter().all(Value::is_null),
        payload if payload.get("cart").is_some() => {
            payload["cart"].is_null() && payload["userErrors"] == json!([{ "code": "CART_NOT_FOUND" }])
        }
        payload => {
            payload["order"].is_null() && payload["userErrors"] == json!([{ "code": "ORDER_NOT_FOUND" }])
        }
    }
}

/// The message of a field refused because the caller has no account.
const NEEDS_ACCOUNT: &str = "authentication required";

/// What of B must never show up in A's answers: never in data, and in error messages only when
/// A's own request said it (a message may quote the id A asked about; that tells A nothing new).
fn assert_nothing_of(bob: &User, bob_order: &str, body: &Value, asked: &str, what: &str) {
    let data = body["data"].to_string();
    let rest: String = match body {
        Value::Object(m) => m.iter().filter(|(k, _)| *k != "data").map(|(_, v)| v.to_string()).collect(),
        other => other.to_string(),
    };
    let bob_order_db = crate::helpers::db_id(bob_order).to_string();
    for secret in [bob.id.as_str(), bob.email.as_str(), bob_order, bob_order_db.as_str(), "bob-acl-1"] {
        assert!(!data.contains(secret), "{what}: B's {secret} leaked in data: {body}");
        assert!(!rest.contains(secret) || asked.contains(secret), "{what}: B's {secret} leaked: {body}");
    }
}

#[tokio::test]
async fn every_root_field_refuses_other_users_resources() {
    let app = spawn_app().await;
    let alice = app.register().await;
    let bob = app.register().await;
    app.add_to_cart(&bob, "MUG-001", 2).await;
    let bob_order = app.place(&bob, "bob-acl-1", "tok_visa").await;
    let bob_final = app.wait_terminal(&bob, &bob_order).await;
    app.add_to_cart(&bob, "BAG-003", 1).await;
    let bob_cart = app.cart(&bob).await;
    let bob_saga =
        app.order(&bob, &bob_order).await["data"]["order"]["saga"]["id"].as_str().unwrap().to_string();
    let ids = app.data(Some(&bob.token), "{ cart { id lines { id } } }", json!({})).await;
    let (cart_id, line_id) =
        (ids["cart"]["id"].as_str().unwrap(), ids["cart"]["lines"][0]["id"].as_str().unwrap());
    let b = Bob { order: &bob_order, saga: &bob_saga, cart: cart_id, line: line_id };

    // The table covers the schema exactly, and no field takes an argument naming a user.
    let fields = schema_roots(&app).await;
    let in_schema: BTreeSet<(String, String)> =
        fields.iter().map(|(r, f, _)| (r.clone(), f.clone())).collect();
    let in_table: BTreeSet<(String, String)> =
        CASES.iter().map(|c| (c.root.into(), c.field.into())).collect();
    assert_eq!(in_schema, in_table, "classify every root field in CASES");
    for (root, field, args) in &fields {
        for a in args {
            assert!(!a.to_lowercase().contains("user") && a != "owner", "{root}.{field}({a}) names a user");
        }
    }

    for case in CASES {
        let what = format!("{}.{}", case.root, case.field);
        // Anonymous: only public fields answer.
        // (A public field may still refuse bad credentials, but never for want of an account.)
        let anon = run(&app, case, None, &b).await;
        let wants_account = anon.to_string().contains(NEEDS_ACCOUNT);
        match case.rule {
            Rule::Public => assert!(!wants_account, "{what} is public: {anon}"),
            Rule::ByCart => assert!(absent(&anon, case.field), "{what}: {anon}"),
            Rule::Own | Rule::ById | Rule::Operator => {
                assert_eq!(code(&anon), "UNAUTHENTICATED", "{what}: {anon}");
                assert!(wants_account, "{what}: {anon}");
            }
        }
        let asked = request_text(case, &b);
        assert_nothing_of(&bob, &bob_order, &anon, &asked, &what);

        // As A against B's resources.
        if case.field == "placeOrder" {
            app.add_to_cart(&alice, "PEN-004", 1).await;
        }
        let as_alice = run(&app, case, Some(&alice.token), &b).await;
        match case.rule {
            Rule::ById | Rule::ByCart => assert!(absent(&as_alice, case.field), "{what}: {as_alice}"),
            Rule::Operator => assert_eq!(code(&as_alice), "FORBIDDEN", "{what}: {as_alice}"),
            // A's own data: works (so the checks on B's data below mean something).
            Rule::Own => assert!(as_alice.get("errors").is_none(), "{what}: {as_alice}"),
            Rule::Public => {}
        }
        assert_nothing_of(&bob, &bob_order, &as_alice, &asked, &what);
    }

    // B's data is as it was: A's cart mutations, cancel, logout and order placement touched only A.
    assert_eq!(app.cart(&bob).await, bob_cart, "B's cart unchanged");
    let after = app.order(&bob, &bob_order).await["data"]["order"].clone();
    assert_eq!(after["status"], bob_final["status"]);
    assert_eq!(after["cancelReason"], bob_final["cancelReason"]);
    let bob_orders = app.data(Some(&bob.token), "{ orders { nodes { id } } }", json!({})).await;
    assert_eq!(
        bob_orders["orders"]["nodes"].as_array().unwrap().len(),
        1,
        "A's placeOrder made no order for B"
    );
    assert_eq!(app.data(Some(&bob.token), "{ me { id } }", json!({})).await["me"]["id"], bob.id.as_str());
    app.stop().await;
}

/// One rule for ids that name nothing the caller may see: a malformed id, an absent one and
/// someone else's answer alike, in the way each kind of field can: lookups `null`, buyer
/// mutations an `ORDER_NOT_FOUND` user error, subscriptions a `NOT_FOUND` error.
#[tokio::test]
async fn malformed_absent_and_someone_elses_ids_answer_alike() {
    let app = spawn_app().await;
    let alice = app.register().await;
    let bob = app.register().await;
    app.add_to_cart(&bob, "MUG-001", 1).await;
    let bob_order = app.place(&bob, "alike-1", "tok_visa").await;
    app.wait_terminal(&bob, &bob_order).await;
    use base64::Engine;
    let absent =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("Order/{}", uuid::Uuid::now_v7()));
    let t = Some(alice.token.as_str());
    for id in ["not-an-id", absent.as_str(), bob_order.as_str()] {
        let vars = json!({ "id": id });
        let order =
            app.data(t, "query($id: ID!) { order(id: $id) { id } node(id: $id) { id } }", vars.clone()).await;
        assert_eq!(order, json!({ "order": null, "node": null }), "{id}");
        for m in [
            "mutation($id: ID!) { r: cancelOrder(orderId: $id) { order { id } userErrors { code field } } }",
            "mutation($id: ID!) { r: requestRefund(orderId: $id, reason: \"why\") { order { id } userErrors { code field } } }",
        ] {
            let d = app.data(t, m, vars.clone()).await;
            assert_eq!(d["r"], json!({ "order": null, "userErrors": [{ "code": "ORDER_NOT_FOUND", "field": ["orderId"] }] }), "{m} {id}");
        }
        let mut ws = app.ws(t).await;
        ws.expect_ack().await;
        ws.subscribe(id).await;
        let errors = ws.collect().await.expect_err("no events of an order the caller has not");
        assert_eq!(errors[0]["extensions"]["code"], "NOT_FOUND", "{id}: {errors}");
    }
    app.stop().await;
}
