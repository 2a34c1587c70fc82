//! The Relay conventions frontends rely on: cursor connections that page forward and backward
//! over the buyer's orders and the catalog, and `node`/`nodes` refetching any cached object by
//! its global id.

use serde_json::{json, Value};

use crate::helpers::{code, spawn_app, TestApp, User};

const ORDERS: &str = "query($first: Int, $after: String, $last: Int, $before: String) {
    orders(first: $first, after: $after, last: $last, before: $before) {
        totalCount edges { cursor node { id } } nodes { id }
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }";

const PRODUCTS: &str = "query($first: Int, $after: String, $last: Int, $before: String) {
    products(first: $first, after: $after, last: $last, before: $before) {
        totalCount nodes { id sku }
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }";

fn ids(conn: &Value, key: &str) -> Vec<String> {
    conn["nodes"].as_array().unwrap().iter().map(|n| n[key].as_str().unwrap().to_string()).collect()
}

async fn page(app: &TestApp, user: Option<&User>, doc: &str, field: &str, vars: Value) -> Value {
    app.data(user.map(|u| u.token.as_str()), doc, vars).await[field].clone()
}

#[tokio::test]
async fn orders_page_forward_and_backward_newest_first() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    let mut placed = Vec::new();
    for i in 0..5 {
        app.add_to_cart(&buyer, "MUG-001", 1).await;
        placed.push(app.place(&buyer, &format!("page-{i}"), "tok_visa").await);
    }
    let newest_first: Vec<String> = placed.iter().rev().cloned().collect();

    // Forward, two at a time.
    let mut seen = Vec::new();
    let mut after = Value::Null;
    for expected_next in [true, true, false] {
        let p = page(&app, Some(&buyer), ORDERS, "orders", json!({ "first": 2, "after": after })).await;
        assert_eq!(p["totalCount"], 5);
        assert_eq!(p["pageInfo"]["hasNextPage"], expected_next, "{p}");
        assert_eq!(p["pageInfo"]["hasPreviousPage"], !after.is_null(), "{p}");
        let edges = p["edges"].as_array().unwrap();
        assert_eq!(p["pageInfo"]["endCursor"], edges.last().unwrap()["cursor"]);
        seen.extend(ids(&p, "id"));
        after = p["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen, newest_first, "every order once, newest first");

    // Backward from the end, two at a time: the same order within each page.
    let mut back = Vec::new();
    let mut before = Value::Null;
    for expected_previous in [true, true, false] {
        let p = page(&app, Some(&buyer), ORDERS, "orders", json!({ "last": 2, "before": before })).await;
        assert_eq!(p["pageInfo"]["hasPreviousPage"], expected_previous, "{p}");
        assert_eq!(p["pageInfo"]["hasNextPage"], !before.is_null(), "{p}");
        let mut chunk = ids(&p, "id");
        chunk.extend(back);
        back = chunk;
        before = p["pageInfo"]["startCursor"].clone();
    }
    assert_eq!(back, newest_first);

    // Between two cursors.
    let all = page(&app, Some(&buyer), ORDERS, "orders", json!({ "first": 5 })).await;
    let cursors: Vec<Value> = all["edges"].as_array().unwrap().iter().map(|e| e["cursor"].clone()).collect();
    let mid = page(
        &app,
        Some(&buyer),
        ORDERS,
        "orders",
        json!({ "first": 10, "after": cursors[0], "before": cursors[4] }),
    )
    .await;
    assert_eq!(ids(&mid, "id"), newest_first[1..4]);

    // Someone else's page is their own.
    let other = app.register().await;
    let p = page(&app, Some(&other), ORDERS, "orders", json!({ "first": 5, "after": cursors[0] })).await;
    assert_eq!((p["totalCount"].clone(), p["nodes"].clone()), (json!(0), json!([])));

    // Bad requests are the client's to fix.
    for vars in [
        json!({ "first": 1, "last": 1 }),
        json!({ "first": 101 }),
        json!({ "last": -1 }),
        json!({ "first": 1, "after": "not-a-cursor" }),
    ] {
        let body = app.gql(Some(&buyer.token), ORDERS, vars.clone()).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{vars}: {body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_catalog_pages_by_sku_both_ways() {
    let app = spawn_app().await;
    let all = page(&app, None, PRODUCTS, "products", json!({ "first": 100 })).await;
    let skus = ids(&all, "sku");
    assert_eq!(all["totalCount"], skus.len());
    let mut sorted = skus.clone();
    sorted.sort();
    assert_eq!(skus, sorted, "by SKU");
    assert!(skus.len() >= 5);

    let mut forward = Vec::new();
    let mut after = Value::Null;
    loop {
        let p = page(&app, None, PRODUCTS, "products", json!({ "first": 2, "after": after })).await;
        forward.extend(ids(&p, "sku"));
        if p["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = p["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(forward, skus);
    let last2 = page(&app, None, PRODUCTS, "products", json!({ "last": 2 })).await;
    assert_eq!(ids(&last2, "sku"), skus[skus.len() - 2..]);
    assert_eq!(last2["pageInfo"]["hasPreviousPage"], true);
    let before = page(
        &app,
        None,
        PRODUCTS,
        "products",
        json!({ "last": 2, "before": last2["pageInfo"]["startCursor"] }),
    )
    .await;
    assert_eq!(ids(&before, "sku"), skus[skus.len() - 4..skus.len() - 2]);
    app.stop().await;
}

#[tokio::test]
async fn node_refetches_every_cached_object_and_nothing_of_anyone_else() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 2).await;
    let order = app.place(&buyer, "node-1", "tok_visa").await;
    app.wait_terminal(&buyer, &order).await;
    app.add_to_cart(&buyer, "TEE-002", 1).await;
    let d = app
        .data(
            Some(&buyer.token),
            "query($o: ID!) {
                cart { id items { id sku } }
                order(id: $o) { id databaseId lines { id sku } saga { id } }
                products(first: 1) { nodes { id sku } } }",
            json!({ "o": order }),
        )
        .await;
    let objects = [
        ("Cart", d["cart"]["id"].clone()),
        ("CartItem", d["cart"]["items"][0]["id"].clone()),
        ("Order", d["order"]["id"].clone()),
        ("OrderLine", d["order"]["lines"][0]["id"].clone()),
        ("Saga", d["order"]["saga"]["id"].clone()),
        ("Product", d["products"]["nodes"][0]["id"].clone()),
    ];
    let mut distinct: Vec<&Value> = objects.iter().map(|(_, id)| id).collect();
    distinct.dedup();
    assert_eq!(distinct.len(), objects.len(), "ids are unique across types: {objects:?}");
    assert_ne!(d["order"]["id"], d["order"]["databaseId"], "the global id is not the database id");
    for (typename, id) in &objects {
        let n = app
            .data(
                Some(&buyer.token),
                "query($id: ID!) { node(id: $id) { __typename id } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(n["node"], json!({ "__typename": typename, "id": id }), "{typename}");
    }
    let ids: Vec<Value> = objects.iter().map(|(_, id)| id.clone()).chain([json!("garbage")]).collect();
    let n = app
        .data(Some(&buyer.token), "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", json!({ "ids": ids }))
        .await;
    let got: Vec<Value> = n["nodes"].as_array().unwrap().iter().map(|x| x["id"].clone()).collect();
    let mut expected = ids.clone();
    *expected.last_mut().unwrap() = Value::Null;
    assert_eq!(got, expected, "in the order asked, null for what is not there");

    // Another buyer gets null for each of them but the product, and nothing else.
    let other = app.register().await;
    let n = app
        .data(
            Some(&other.token),
            "query($ids: [ID!]!) { nodes(ids: $ids) { __typename } }",
            json!({ "ids": ids }),
        )
        .await;
    assert_eq!(n["nodes"], json!([null, null, null, null, null, { "__typename": "Product" }, null]), "{n}");
    // Anyone may refetch a product; an order needs an account.
    let product =
        app.data(None, "query($id: ID!) { node(id: $id) { id } }", json!({ "id": objects[5].1 })).await;
    assert_eq!(product["node"]["id"], objects[5].1);
    let anon = app.gql(None, "query($id: ID!) { node(id: $id) { id } }", json!({ "id": objects[2].1 })).await;
    assert_eq!(code(&anon), "UNAUTHENTICATED");
    let too_many: Vec<String> = (0..101).map(|i| format!("x{i}")).collect();
    let body = app
        .gql(
            Some(&buyer.token),
            "query($ids: [ID!]!) { nodes(ids: $ids) { id } }",
            json!({ "ids": too_many }),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT");
    app.stop().await;
}

/// `nodes(ids:)` looks its ids up together, one query per kind of object: it fetched them one
/// at a time (100 MongoDB queries for 100 product ids no cache holds, anonymously; a query per
/// order id). And the complexity limit charges each id's lookup, so a document cannot multiply
/// them with aliases.
#[tokio::test]
async fn nodes_looks_ids_up_together_and_the_complexity_limit_charges_each_lookup() {
    use std::sync::atomic::Ordering::SeqCst;
    let app = spawn_app().await;
    let unknown: Vec<String> = (0..100)
        .map(|i| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("Product/NONE-{i:03}"))
        })
        .collect();
    let before = app.api_mongo_commands.load(SeqCst);
    let d =
        app.data(None, "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", json!({ "ids": unknown })).await;
    assert_eq!(d["nodes"].as_array().unwrap().len(), 100);
    assert!(d["nodes"].as_array().unwrap().iter().all(Value::is_null), "{d}");
    let commands = app.api_mongo_commands.load(SeqCst) - before;
    assert!(commands <= 5, "{commands} MongoDB commands for one nodes(ids:) of 100 products");

    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let order = app.place(&buyer, "nodes-batch", "tok_visa").await;
    let order = app
        .data(
            Some(&buyer.token),
            "query($id: ID!) { order(id: $id) { id lines { id } } }",
            json!({ "id": order }),
        )
        .await;
    let line = order["order"]["lines"][0]["id"].as_str().map(String::from);
    assert!(line.is_some(), "{order}");
    let mut ids = vec![order["order"]["id"].as_str().unwrap().to_string(); 20];
    ids.extend(line.into_iter().cycle().take(20));
    let id = order["order"]["id"].as_str().unwrap().to_string();
    app.wait_terminal(&buyer, &id).await;
    // Reads of `orders` and `order_lines`, as the server counts them (nothing else touches them
    // once the checkout ended). Backends report within 10 s of going idle.
    let reads = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0))::bigint FROM pg_stat_user_tables
              WHERE relname IN ('orders', 'order_lines')",
        )
        .fetch_one(app.pool())
        .await
        .unwrap()
    };
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    let before = reads().await;
    let d = app
        .data(Some(&buyer.token), "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", json!({ "ids": ids }))
        .await;
    assert!(d["nodes"].as_array().unwrap().iter().all(|n| !n.is_null()), "{d}");
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    let read = reads().await - before;
    // The orders once, their lines once (one at a time: 20 + 20 × 2).
    assert!(read <= 4, "orders and their lines were read {read} times for one nodes(ids:) of 40 ids");

    // Four lookups of 100 ids selecting only `id` cost 4 × 100 × (1 + 2) = 1,200 > 1,000.
    let four = "query($ids: [ID!]!) { a: nodes(ids: $ids) { id } b: nodes(ids: $ids) { id }
                                      c: nodes(ids: $ids) { id } d: nodes(ids: $ids) { id } }";
    let r = app.gql(None, four, json!({ "ids": unknown })).await;
    assert_eq!(code(&r), "BAD_USER_INPUT", "{r}");
    assert!(r["errors"][0]["message"].as_str().unwrap().contains("complex"), "{r}");
    let three = "query($ids: [ID!]!) { a: nodes(ids: $ids) { id } b: nodes(ids: $ids) { id }
                                       c: nodes(ids: $ids) { id } }";
    assert!(app.gql(None, three, json!({ "ids": unknown })).await.get("errors").is_none());
    app.stop().await;
}
