use serde_json::json;

use crate::helpers::{code, spawn_app};

#[tokio::test]
async fn depth_and_body_size_are_limited_and_errors_carry_codes() {
    let app = spawn_app().await;
    let buyer = app.register().await;

    // 16 levels of nesting through the introspection types exceeds the depth limit of 12.
    let deep = format!(
        "{{ __schema {{ types {{ fields {{ type {}name{} }} }} }} }}",
        "ofType { ".repeat(11),
        " }".repeat(11)
    );
    let deep = deep.as_str();
    let body = app.gql(Some(&buyer.token), deep, json!({})).await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("deep"), "{body}");

    let syntax = app.gql(None, "{ products { ", json!({})).await;
    assert_eq!(code(&syntax), "BAD_USER_INPUT");
    let unknown_field = app.gql(None, "{ products { password } }", json!({})).await;
    assert_eq!(code(&unknown_field), "BAD_USER_INPUT");
    let bad_id = app.gql(Some(&buyer.token), "{ order(id: \"not-a-uuid\") { id } }", json!({})).await;
    assert_eq!(code(&bad_id), "BAD_USER_INPUT");

    let huge = "x".repeat(200_000);
    let resp = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "query": format!("{{ products {{ sku }} }} # {huge}") }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error(), "oversized body refused, got {}", resp.status());

    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    app.stop().await;
}
