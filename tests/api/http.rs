//! HTTP layers around the API: CORS for browsers on other origins, gzip for clients that accept it.

use reqwest::header::{
    ACCEPT_ENCODING, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, CONTENT_ENCODING, CONTENT_TYPE, ORIGIN,
};
use serde_json::json;

use crate::helpers::*;

const SHOP: &str = "https://shop.example.com";

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.http
        .request(reqwest::Method::OPTIONS, app.url("/graphql"))
        .header(ORIGIN, origin)
        .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(ACCESS_CONTROL_REQUEST_HEADERS, "authorization,content-type")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn browsers_on_allowed_origins_may_call_the_api_and_others_may_not() {
    let app = spawn_app_with(|c| c.api.cors_allowed_origins = vec![SHOP.to_string()]).await;
    let ok = preflight(&app, SHOP).await;
    assert!(ok.status().is_success(), "{}", ok.status());
    assert_eq!(ok.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], SHOP);
    let allowed = ok.headers()[ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().to_ascii_lowercase();
    for name in ["authorization", "content-type", "traceparent", "tracestate"] {
        assert!(allowed.split(',').any(|h| h.trim() == name), "{name} not in {allowed}");
    }

    let other = preflight(&app, "https://evil.example.net").await;
    assert!(other.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(), "{:?}", other.headers());

    // The actual request carries the header too.
    let r = app
        .http
        .post(app.url("/graphql"))
        .header(ORIGIN, SHOP)
        .json(&json!({ "query": "{ products(first: 1) { nodes { sku } } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], SHOP);
    app.stop().await;
}

#[tokio::test]
async fn without_allowed_origins_there_is_no_cors_and_answers_are_gzipped_on_request() {
    let app = spawn_app().await;
    let r = preflight(&app, SHOP).await;
    assert!(r.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(), "{:?}", r.headers());

    let products = json!({ "query": "{ products { nodes { sku name price { amountMinor currency } } } }" });
    let gzipped = app
        .http
        .post(app.url("/graphql"))
        .header(ACCEPT_ENCODING, "gzip")
        .json(&products)
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.headers()[CONTENT_ENCODING], "gzip");
    assert!(gzipped.headers()[CONTENT_TYPE].to_str().unwrap().contains("json"), "{:?}", gzipped.headers());
    let body = gzipped.bytes().await.unwrap();
    assert_eq!(&body[..2], [0x1f, 0x8b], "a gzip stream");

    let plain = app.http.post(app.url("/graphql")).json(&products).send().await.unwrap();
    assert!(plain.headers().get(CONTENT_ENCODING).is_none());
    let plain: serde_json::Value = plain.json().await.unwrap();
    assert_eq!(plain["data"]["products"]["nodes"].as_array().unwrap().len(), 5, "{plain}");
    app.stop().await;
}

/// `/metrics` and `/readyz` are not on the port clients reach (they were anonymous there, and
/// every scrape ran a query over all sagas): they are on the admin listener only.
#[tokio::test]
async fn metrics_and_readiness_are_served_on_the_admin_listener_only() {
    let app = spawn_app().await;
    for path in ["/metrics", "/readyz"] {
        let public = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(public.status(), 404, "{path} on the public port");
        let admin = app.http.get(app.admin_url(path)).send().await.unwrap();
        assert_eq!(admin.status(), 200, "{path} on the admin port");
    }
    let ready: serde_json::Value =
        app.http.get(app.admin_url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready, json!({ "postgres": "ok", "mongo": "ok", "broker": "ok" }));
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200, "liveness stays");
    app.stop().await;
}

/// A scrape's saga gauge reads only the sagas in flight, through an index, however many have
/// finished: with 20,000 finished sagas and none in flight it reads (next to) no row.
#[tokio::test]
async fn the_saga_gauge_reads_through_an_index_however_many_sagas_finished() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    let pool = app.pool();
    sqlx::query(
        "INSERT INTO orders (id, user_id, status, total_minor, currency, idempotency_key)
         SELECT gen_random_uuid(), u.id, 'CONFIRMED', 100, 'EUR', 'bulk-' || i
         FROM generate_series(1, 20000) i, users u WHERE u.email = $1",
    )
    .bind(&buyer.email)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO sagas (id, order_id, user_id, definition, status, step, attempt, payload, trace_id)
         SELECT gen_random_uuid(), id, user_id, 'checkout', 'COMPLETED', 3, 1, '{}', 't' FROM orders",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE sagas").execute(pool).await.unwrap();
    // Rows the query's scans of `sagas` read: returned, or read and thrown away by a filter.
    fn rows_read(node: &serde_json::Value) -> f64 {
        let own = if node["Relation Name"] == "sagas" {
            ["Actual Rows", "Rows Removed by Filter", "Rows Removed by Index Recheck"]
                .iter()
                .map(|k| node[*k].as_f64().unwrap_or(0.0))
                .sum::<f64>()
        } else {
            0.0
        };
        own + node["Plans"].as_array().map_or(0.0, |plans| plans.iter().map(rows_read).sum())
    }
    let sql = format!("EXPLAIN (ANALYZE, FORMAT JSON) {}", ecommerce_platform::metrics::UNFINISHED_SAGAS);
    let plan: serde_json::Value = sqlx::query_scalar(&sql).fetch_one(pool).await.unwrap();
    let read = rows_read(&plan[0]["Plan"]);
    assert!(read < 100.0, "the gauge read {read} saga rows for none in flight: {plan:#}");
    let text = app.http.get(app.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("status=\"COMPLETED\""), "finished sagas are not in the gauge:\n{text}");
    app.stop().await;
}

/// A client that never finishes its request head is disconnected after the header timeout, and
/// one that sends its body slowly is answered 408 after the request timeout. Both kept their
/// connection (and a task) for as long as they liked (slowloris).
#[tokio::test]
async fn slow_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|c| {
        c.api.header_timeout = std::time::Duration::from_millis(500);
        c.api.request_timeout = std::time::Duration::from_millis(1000);
    })
    .await;
    let answer = |mut s: tokio::net::TcpStream| async move {
        let mut got = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(15), s.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "still connected after 15 s");
        String::from_utf8_lossy(&got).to_string()
    };

    let mut head = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    head.write_all(b"POST /graphql HTTP/1.1\r\nHost: shop\r\n").await.unwrap();
    let got = answer(head).await;
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got}");

    let silent = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    answer(silent).await;

    let mut body = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    body.write_all(
        b"POST /graphql HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"query\"",
    )
    .await
    .unwrap();
    let got = answer(body).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");

    // A client that sends its request at once is served as before.
    let r =
        app.http.post(app.url("/graphql")).json(&json!({ "query": "{ __typename }" })).send().await.unwrap();
    assert_eq!(r.status(), 200);
    app.stop().await;
}
