use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};
use sqlx::Row;

use crate::helpers::{code, spawn_app, User};

const ORDER_Q: &str = "query($id: ID!) { order(id: $id) { id status } }";

async fn me(app: &crate::helpers::TestApp, token: &str) -> serde_json::Value {
    app.gql(Some(token), "{ me { id email } }", json!({})).await
}

/// Signs `claims` with the server's current private key (read from the database), as an attacker
/// holding a stolen key could; lets tests build expired or otherwise-bad but validly signed tokens.
async fn sign_with_server_key(
    app: &crate::helpers::TestApp,
    claims: serde_json::Value,
    kid: Option<&str>,
) -> String {
    let row = sqlx::query("SELECT kid, private_seed FROM signing_keys WHERE retire_after IS NULL")
        .fetch_one(app.pool())
        .await
        .unwrap();
    let seed: Vec<u8> = row.get("private_seed");
    let mut der =
        vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    der.extend_from_slice(&seed);
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.map(str::to_string).unwrap_or_else(|| row.get("kid")));
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&der)).unwrap()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// The claims of a token, unverified.
fn payload(token: &str) -> serde_json::Value {
    let part = token.split('.').nth(1).expect("a JWT has three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn register_login_and_credential_errors() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    assert_eq!(me(&app, &buyer.token).await["data"]["me"]["email"], buyer.email);

    let login = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken } }";
    let ok =
        app.gql(None, login, json!({ "e": buyer.email.to_uppercase(), "p": "correct horse battery" })).await;
    assert!(ok["data"]["login"]["accessToken"].is_string(), "{ok}");
    let wrong = app.gql(None, login, json!({ "e": buyer.email, "p": "wrong password" })).await;
    assert_eq!(code(&wrong), "UNAUTHENTICATED");
    let unknown = app.gql(None, login, json!({ "e": "nobody@example.com", "p": "wrong password" })).await;
    assert_eq!(code(&unknown), "UNAUTHENTICATED");
    assert_eq!(wrong["errors"][0]["message"], unknown["errors"][0]["message"], "no user enumeration");

    let register = "mutation($e: String!, $p: String!) { register(email: $e, password: $p) { accessToken } }";
    let dup = app.gql(None, register, json!({ "e": buyer.email, "p": "another password" })).await;
    assert_eq!(code(&dup), "CONFLICT");
    let bad_email = app.gql(None, register, json!({ "e": "not-an-email", "p": "long enough pw" })).await;
    assert_eq!(code(&bad_email), "BAD_USER_INPUT");
    let short = app.gql(None, register, json!({ "e": "short@example.com", "p": "short" })).await;
    assert_eq!(code(&short), "BAD_USER_INPUT");

    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE email = $1")
        .bind(&buyer.email)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"));
    app.stop().await;
}

/// A sign-up or sign-in form shows what is wrong by field: `userErrors` with a code and the
/// input field, and nothing changes; a session only when nothing is wrong.
#[tokio::test]
async fn sign_up_and_sign_in_answer_form_errors_by_field() {
    let app = spawn_app().await;
    let sign_up = "mutation($input: SignUpInput!) { signUp(input: $input) {
        session { accessToken refreshToken tokenType user { email } } userErrors { code field message } } }";
    let sign_in = "mutation($input: SignInInput!) { signIn(input: $input) {
        session { accessToken user { email } } userErrors { code field message } } }";
    let email = format!("form-{}@example.com", uuid::Uuid::new_v4().simple());
    let errors = |d: &Value, m: &str| -> Vec<(String, Value)> {
        assert!(d[m]["session"].is_null() || d[m]["userErrors"].as_array().unwrap().is_empty(), "{d}");
        d[m]["userErrors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert!(!e["message"].as_str().unwrap().is_empty());
                (e["code"].as_str().unwrap().to_string(), e["field"].clone())
            })
            .collect()
    };

    for (e, p, want) in [
        ("not-an-email", "long enough pw", ("INVALID_EMAIL", json!(["input", "email"]))),
        (email.as_str(), "short", ("PASSWORD_TOO_SHORT", json!(["input", "password"]))),
        (email.as_str(), &"x".repeat(129), ("PASSWORD_TOO_LONG", json!(["input", "password"]))),
    ] {
        let d = app.data(None, sign_up, json!({ "input": { "email": e, "password": p } })).await;
        assert_eq!(errors(&d, "signUp"), [(want.0.to_string(), want.1)], "{d}");
        assert!(d["signUp"]["session"].is_null());
    }
    let users = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users WHERE email = $1")
            .bind(&email)
            .fetch_one(app.pool())
            .await
            .unwrap()
    };
    assert_eq!(users().await, 0, "a refused sign-up creates nothing");

    let d = app
        .data(
            None,
            sign_up,
            json!({ "input": { "email": email.to_uppercase(), "password": "long enough pw" } }),
        )
        .await;
    assert_eq!(errors(&d, "signUp"), []);
    assert_eq!(d["signUp"]["session"]["user"]["email"], email.as_str(), "normalized");
    assert_eq!(d["signUp"]["session"]["tokenType"], "Bearer");
    let token = d["signUp"]["session"]["accessToken"].as_str().unwrap().to_string();
    assert_eq!(me(&app, &token).await["data"]["me"]["email"], email.as_str());

    let d =
        app.data(None, sign_up, json!({ "input": { "email": email, "password": "another password" } })).await;
    assert_eq!(errors(&d, "signUp"), [("EMAIL_TAKEN".to_string(), json!(["input", "email"]))]);
    assert_eq!(users().await, 1);

    let wrong =
        app.data(None, sign_in, json!({ "input": { "email": email, "password": "wrong password" } })).await;
    let unknown = app
        .data(
            None,
            sign_in,
            json!({ "input": { "email": "nobody@example.com", "password": "wrong password" } }),
        )
        .await;
    for d in [&wrong, &unknown] {
        assert_eq!(errors(d, "signIn"), [("INVALID_CREDENTIALS".to_string(), Value::Null)], "{d}");
        assert!(d["signIn"]["session"].is_null());
    }
    assert_eq!(wrong["signIn"]["userErrors"], unknown["signIn"]["userErrors"], "no user enumeration");
    let ok =
        app.data(None, sign_in, json!({ "input": { "email": email, "password": "long enough pw" } })).await;
    assert_eq!(errors(&ok, "signIn"), []);
    assert_eq!(ok["signIn"]["session"]["user"]["email"], email.as_str());
    app.stop().await;
}

#[tokio::test]
async fn unauthenticated_callers_are_refused() {
    let app = spawn_app().await;
    for q in [
        "{ me { id } }",
        "{ cart { itemCount } }",
        "{ orders { nodes { id } } }",
        "mutation { addToCart(sku: \"MUG-001\", quantity: 1) { cart { itemCount } } }",
        "mutation { clearCart { cart { itemCount } } }",
        "mutation { placeOrder(idempotencyKey: \"k\", paymentToken: \"tok_visa\") { order { id } } }",
    ] {
        let body = app.gql(None, q, json!({})).await;
        assert_eq!(code(&body), "UNAUTHENTICATED", "{q}: {body}");
    }
    let body = app.gql(None, ORDER_Q, json!({ "id": uuid::Uuid::nil() })).await;
    assert_eq!(code(&body), "UNAUTHENTICATED");
    // The catalog is public.
    let products = app.data(None, "{ products { nodes { sku } } }", json!({})).await;
    assert_eq!(products["products"]["nodes"].as_array().unwrap().len(), 5);
    app.stop().await;
}

#[tokio::test]
async fn users_cannot_see_or_subscribe_to_each_others_orders_or_carts() {
    let app = spawn_app().await;
    let alice = app.register().await;
    let bob = app.register().await;
    app.add_to_cart(&alice, "MUG-001", 3).await;
    let id = app.place(&alice, "alice-1", "tok_visa").await;

    // Another buyer's order is as absent as one that never was.
    let read = app.data(Some(&bob.token), ORDER_Q, json!({ "id": id })).await;
    assert_eq!(read["order"], Value::Null);
    let node =
        app.data(Some(&bob.token), "query($id: ID!) { node(id: $id) { id } }", json!({ "id": id })).await;
    assert_eq!(node["node"], Value::Null);
    let cancel = app
        .data(
            Some(&bob.token),
            "mutation($id: ID!) { cancelOrder(orderId: $id) { order { id } userErrors { code field } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        cancel["cancelOrder"],
        json!({ "order": null, "userErrors": [{ "code": "ORDER_NOT_FOUND", "field": ["orderId"] }] })
    );
    let listed = app.data(Some(&bob.token), "{ orders { nodes { id } } }", json!({})).await;
    assert_eq!(listed["orders"]["nodes"], json!([]));
    assert_eq!(app.cart(&bob).await["itemCount"], 0, "bob's cart is his own");

    let sub = app.order_events(&bob, &id).await;
    let errors = sub.expect_err("bob must not subscribe to alice's order");
    assert_eq!(errors[0]["extensions"]["code"], "NOT_FOUND", "{errors}");

    let mut anon = app.ws(None).await;
    anon.expect_ack().await;
    anon.subscribe(&id).await;
    let errors = anon.collect().await.expect_err("anonymous subscription refused");
    assert_eq!(errors[0]["extensions"]["code"], "UNAUTHENTICATED", "{errors}");

    // Alice sees hers.
    let mine = app.gql(Some(&alice.token), ORDER_Q, json!({ "id": id })).await;
    assert_eq!(mine["data"]["order"]["id"], id.as_str());
    app.stop().await;
}

#[tokio::test]
async fn tampered_expired_early_confused_wrong_kid_and_unsigned_tokens_are_refused() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    let claims = |exp: u64| {
        json!({ "sub": buyer.id, "email": buyer.email, "iss": "ecommerce-saga", "aud": "ecommerce-saga-api",
                "iat": now() - 10, "nbf": now() - 10, "exp": exp, "jti": uuid::Uuid::new_v4(),
                "sid": payload(&buyer.token)["sid"] })
    };
    // Control: a token built the same way, valid, is accepted (so the refusals below mean something).
    let good = sign_with_server_key(&app, claims(now() + 300), None).await;
    assert_eq!(me(&app, &good).await["data"]["me"]["id"], buyer.id.as_str());

    // A few seconds of clock skew are tolerated, minutes are not.
    let skewed = sign_with_server_key(&app, claims(now() - 5), None).await;
    assert_eq!(me(&app, &skewed).await["data"]["me"]["id"], buyer.id.as_str(), "within the leeway");
    let expired = sign_with_server_key(&app, claims(now() - 3600), None).await;
    let expired_2m = sign_with_server_key(&app, claims(now() - 120), None).await;
    let mut early = claims(now() + 7200);
    early["nbf"] = json!(now() + 3600);
    early["iat"] = json!(now() + 3600);
    let not_yet_valid = sign_with_server_key(&app, early, None).await;
    let mut no_sid = claims(now() + 300);
    no_sid.as_object_mut().unwrap().remove("sid");
    let no_sid = sign_with_server_key(&app, no_sid, None).await;
    let mut other_sid = claims(now() + 300);
    other_sid["sid"] = json!(uuid::Uuid::new_v4());
    let other_sid = sign_with_server_key(&app, other_sid, None).await;

    // Algorithm confusion: HS256 with the published public key as the HMAC secret, same kid.
    let jwks: serde_json::Value =
        app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let jwk = &jwks["keys"][0];
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = jwk["kid"].as_str().map(str::to_string);
    let x = jwk["x"].as_str().unwrap();
    let hs256_x =
        jsonwebtoken::encode(&hs, &claims(now() + 300), &EncodingKey::from_secret(x.as_bytes())).unwrap();
    let raw_public = URL_SAFE_NO_PAD.decode(x).unwrap();
    let hs256_raw =
        jsonwebtoken::encode(&hs, &claims(now() + 300), &EncodingKey::from_secret(&raw_public)).unwrap();
    let wrong_kid = sign_with_server_key(&app, claims(now() + 300), Some("not-a-key")).await;
    let mut wrong_aud = claims(now() + 300);
    wrong_aud["aud"] = json!("someone-else");
    let wrong_aud = sign_with_server_key(&app, wrong_aud, None).await;
    let mut wrong_iss = claims(now() + 300);
    wrong_iss["iss"] = json!("evil");
    let wrong_iss = sign_with_server_key(&app, wrong_iss, None).await;

    // Tampered: another user's id in the payload, original signature kept.
    let parts: Vec<&str> = buyer.token.split('.').collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["sub"] = json!(uuid::Uuid::new_v4());
    let tampered = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(payload.to_string()), parts[2]);

    // alg=none with no signature.
    let none_header = URL_SAFE_NO_PAD.encode(json!({ "alg": "none", "typ": "JWT" }).to_string());
    let unsigned = format!("{none_header}.{}.", parts[1]);

    for (name, token) in [
        ("expired", expired),
        ("expired 2 minutes ago", expired_2m),
        ("not yet valid", not_yet_valid),
        ("no session id", no_sid),
        ("unknown session id", other_sid),
        ("HS256 keyed with the JWK x", hs256_x),
        ("HS256 keyed with the raw public key", hs256_raw),
        ("wrong kid", wrong_kid),
        ("wrong aud", wrong_aud),
        ("wrong iss", wrong_iss),
        ("tampered", tampered),
        ("alg none", unsigned),
        ("garbage", "not.a.jwt".to_string()),
    ] {
        let body = me(&app, &token).await;
        assert_eq!(code(&body), "UNAUTHENTICATED", "{name}: {body}");
        // The websocket refuses the connection outright, with graphql-ws's 4403 Forbidden.
        let mut ws = app.ws(Some(&token)).await;
        assert_eq!(ws.close_code().await, Some(4403), "{name}");
    }
    app.stop().await;
}

/// A frontend's graphql-ws client (the npm package) whose access token expired: the server closes
/// the connection with 4403, which the client takes as "ask again" (it gives up on 1002, what
/// async-graphql sends by itself); with the refreshed token it follows the order to the end.
#[tokio::test]
async fn a_graphql_ws_client_reconnects_with_a_fresh_token_after_4403() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let order = app.place(&buyer, "ws-refresh", "tok_visa").await;
    let expired = sign_with_server_key(
        &app,
        json!({ "sub": buyer.id, "email": buyer.email, "iss": "ecommerce-saga", "aud": "ecommerce-saga-api",
                "iat": now() - 3700, "nbf": now() - 3700, "exp": now() - 3600, "jti": uuid::Uuid::new_v4(),
                "sid": payload(&buyer.token)["sid"] }),
        None,
    )
    .await;
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(dir.join("node_modules/graphql-ws").is_dir(), "run scripts/services.sh browser");
    let args = [format!("ws://{}/graphql/ws", app.addr), expired, buyer.token.clone(), order];
    // Off the test's runtime, which serves the API meanwhile.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node").current_dir(&dir).arg("ws-client.mjs").args(&args).output()
    })
    .await
    .unwrap()
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lines.first(), Some(&"CLOSED 4403"), "{stdout}");
    let events: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("EVENT ")).collect();
    assert_eq!(events.first(), Some(&"ORDER_PLACED"), "{stdout}");
    assert_eq!(events.last(), Some(&"COMPLETED"), "{stdout}");
    assert!(lines.contains(&"DONE"), "{stdout}");
    app.stop().await;
}

#[tokio::test]
async fn jwks_verifies_issued_tokens_and_rotation_keeps_old_tokens_valid() {
    let app = spawn_app().await;
    let buyer: User = app.register().await;

    let resp = app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap();
    let cache = resp.headers().get("cache-control").expect("cache-control").to_str().unwrap().to_string();
    assert!(cache.contains("public") && cache.contains("max-age="), "{cache}");
    let jwks: serde_json::Value = resp.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].get("d").is_none(), "no private material in the JWKS");
    let kid = jsonwebtoken::decode_header(&buyer.token).unwrap().kid.unwrap();
    assert_eq!(keys[0]["kid"], kid.as_str());

    // An independent verifier that knows only the JWKS accepts the token.
    let key = DecodingKey::from_ed_components(keys[0]["x"].as_str().unwrap()).unwrap();
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_issuer(&["ecommerce-saga"]);
    v.set_audience(&["ecommerce-saga-api"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(&buyer.token, &key, &v)
        .expect("verifies with the JWKS key");
    assert_eq!(data.claims["sub"], buyer.id.as_str());

    // Rotate: a new key signs, the old one still verifies and stays published.
    let new_kid =
        ecommerce_saga::auth::keys::rotate(app.pool(), std::time::Duration::from_secs(900)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5_200)).await; // past the key cache's refresh interval
    let jwks: serde_json::Value =
        app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let kids: Vec<_> =
        jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect();
    assert!(kids.contains(&kid) && kids.contains(&new_kid), "{kids:?}");
    assert_eq!(me(&app, &buyer.token).await["data"]["me"]["id"], buyer.id.as_str(), "old token still valid");
    let fresh = app.register().await;
    assert_eq!(jsonwebtoken::decode_header(&fresh.token).unwrap().kid.unwrap(), new_kid);

    // Once the old key's retirement time passes, it leaves the JWKS and its tokens stop verifying.
    sqlx::query("UPDATE signing_keys SET retire_after = now() - interval '1 second' WHERE kid = $1")
        .bind(&kid)
        .execute(app.pool())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5_200)).await;
    let jwks: serde_json::Value =
        app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(code(&me(&app, &buyer.token).await), "UNAUTHENTICATED");
    app.stop().await;
}

/// Runs `scripts/verify-jwt.py` (Python + OpenSSL, no code shared with the API) against the JWKS URL.
async fn verify_elsewhere(app: &crate::helpers::TestApp, token: &str) -> (bool, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/verify-jwt.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args(["--jwks", &app.url("/.well-known/jwks.json"), "--iss", "ecommerce-saga"])
        .args(["--aud", "ecommerce-saga-api", token])
        .output()
        .await
        .expect("python3 runs");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[tokio::test]
async fn a_separate_process_that_knows_only_the_jwks_url_verifies_tokens() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    let (ok, out) = verify_elsewhere(&app, &buyer.token).await;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), buyer.id);

    // The same verifier refuses a forged payload and a token for another audience.
    let parts: Vec<&str> = buyer.token.split('.').collect();
    let mut claims = payload(&buyer.token);
    claims["sub"] = json!(uuid::Uuid::new_v4());
    let forged = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2]);
    let (ok, out) = verify_elsewhere(&app, &forged).await;
    assert!(!ok && out.contains("bad signature"), "{out}");
    let mut other = payload(&buyer.token);
    other["aud"] = json!("another-api");
    let other = sign_with_server_key(&app, other, None).await;
    let (ok, out) = verify_elsewhere(&app, &other).await;
    assert!(!ok && out.contains("wrong audience"), "{out}");
    app.stop().await;
}

/// A token under a `kid` nobody issued is refused without a query each: the instance reads the
/// keys again (a key another instance just made) at most once a second, and never for a `kid`
/// that is not of the form keys are given. It read the keys table on every such request.
#[tokio::test]
async fn tokens_under_unknown_kids_do_not_read_the_keys_table_each() {
    let app = spawn_app().await;
    let b64 = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let forged = |kid: String| {
        format!(
            "{}.{}.{}",
            b64(json!({ "alg": "EdDSA", "typ": "JWT", "kid": kid })),
            b64(json!({ "sub": uuid::Uuid::new_v4(), "exp": 4_000_000_000u64 })),
            URL_SAFE_NO_PAD.encode([7u8; 64])
        )
    };
    // Reads of the keys table, as the server counts them. Backends report what they did within
    // 10 s of going idle, so the count is read once every report is in.
    let reads = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'signing_keys'",
        )
        .fetch_one(app.pool())
        .await
        .unwrap()
    };
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    let before = reads().await;
    for i in 0..40 {
        let kid =
            if i % 2 == 0 { format!("k{}", uuid::Uuid::new_v4().simple()) } else { format!("made-up-{i}") };
        let r = me(&app, &forged(kid)).await;
        assert_eq!(code(&r), "UNAUTHENTICATED", "{r}");
    }
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    let read = reads().await - before;
    // The regular refresh (every SIGNING_KEYS_REFRESH_SECS) reads it a few times meanwhile.
    assert!(read <= 8, "the keys table was read {read} times for 40 tokens under unknown kids");
    app.stop().await;
}
