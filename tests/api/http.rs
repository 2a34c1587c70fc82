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
