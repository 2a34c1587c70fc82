//! Sessions, abuse limits and what errors may say. Each test fails if its protection is removed.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{code, spawn_app, spawn_app_with, TestApp};

const REFRESH: &str =
    "mutation($t: String!) { refreshSession(refreshToken: $t) { accessToken refreshToken } }";
const LOGIN: &str = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken } }";
const REGISTER: &str =
    "mutation($e: String!, $p: String!) { register(email: $e, password: $p) { accessToken } }";

async fn me(app: &TestApp, token: &str) -> Value {
    app.gql(Some(token), "{ me { id } }", json!({})).await
}

async fn refresh(app: &TestApp, token: &str) -> Value {
    app.gql(None, REFRESH, json!({ "t": token })).await
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_ends_the_session() {
    // No grace window: any reuse is one too many (the window has its own tests below).
    let app = spawn_app_with(|c| c.api.auth.refresh_reuse_grace = Duration::ZERO).await;
    let buyer = app.register().await;

    let first = refresh(&app, &buyer.refresh_token).await;
    let access2 = first["data"]["refreshSession"]["accessToken"].as_str().expect("refreshed").to_string();
    let refresh2 = first["data"]["refreshSession"]["refreshToken"].as_str().unwrap().to_string();
    assert_ne!(refresh2, buyer.refresh_token, "the refresh token rotates");
    assert_eq!(me(&app, &access2).await["data"]["me"]["id"], buyer.id.as_str());

    // Only a digest is stored.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM refresh_tokens WHERE encode(token_hash, 'escape') LIKE '%rt_%'",
    )
    .fetch_one(app.pool())
    .await
    .unwrap();
    assert_eq!(stored, 0);

    // The spent token presented again: refused, and the whole session ends with it.
    let reused = refresh(&app, &buyer.refresh_token).await;
    assert_eq!(code(&reused), "UNAUTHENTICATED", "{reused}");
    assert_eq!(code(&refresh(&app, &refresh2).await), "UNAUTHENTICATED", "the rotated token is revoked too");
    for token in [&buyer.token, &access2] {
        let body = me(&app, token).await;
        assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");
        let mut ws = app.ws(Some(token)).await;
        let first = ws.init_result().await;
        assert!(first.as_ref().is_none_or(|m| m["type"] != "connection_ack"), "ws accepted {first:?}");
    }

    // Garbage, and someone else's format, are refused without a lookup that could fail loudly.
    for bad in ["", "rt_", "rt_AAAA", "eyJhbGciOi.x.y", &"rt_x".repeat(100)] {
        assert_eq!(code(&refresh(&app, bad).await), "UNAUTHENTICATED", "{bad:?}");
    }
    // A new login is a new session and works.
    let login = app.gql(None, LOGIN, json!({ "e": buyer.email, "p": "correct horse battery" })).await;
    let fresh = login["data"]["login"]["accessToken"].as_str().expect("login works").to_string();
    assert_eq!(me(&app, &fresh).await["data"]["me"]["id"], buyer.id.as_str());
    app.stop().await;
}

/// Two tabs refresh with the same token at the same moment: both get the same new refresh token
/// (and working access tokens), and the session goes on; the next refresh rotates as usual.
#[tokio::test]
async fn two_tabs_refreshing_at_once_within_the_grace_window_share_the_new_token() {
    let app = spawn_app_with(|c| c.api.auth.refresh_reuse_grace = Duration::from_secs(60)).await;
    let buyer = app.register().await;
    let (a, b) = tokio::join!(refresh(&app, &buyer.refresh_token), refresh(&app, &buyer.refresh_token));
    let pair = |v: &Value| {
        let r = &v["data"]["refreshSession"];
        (
            r["accessToken"].as_str().unwrap_or_else(|| panic!("{v}")).to_string(),
            r["refreshToken"].as_str().unwrap().to_string(),
        )
    };
    let ((access_a, refresh_a), (access_b, refresh_b)) = (pair(&a), pair(&b));
    assert_eq!(refresh_a, refresh_b, "the same new refresh token for both tabs");
    assert_ne!(refresh_a, buyer.refresh_token);
    for token in [&access_a, &access_b] {
        assert_eq!(me(&app, token).await["data"]["me"]["id"], buyer.id.as_str());
    }
    // The shared token rotates once more, and the session is alive.
    let next = refresh(&app, &refresh_a).await;
    let (access_next, refresh_next) = pair(&next);
    assert_ne!(refresh_next, refresh_a);
    assert_eq!(me(&app, &access_next).await["data"]["me"]["id"], buyer.id.as_str());
    app.stop().await;
}

/// The window serves one second tab, not a thief: a spent token presented a third time within
/// the window (it minted access tokens on every use for the whole window), or presented after its
/// successor was used, ends the session.
#[tokio::test]
async fn the_grace_window_serves_a_spent_token_once_and_a_further_use_ends_the_session() {
    let app = spawn_app_with(|c| c.api.auth.refresh_reuse_grace = Duration::from_secs(60)).await;
    let access = |v: &Value| v["data"]["refreshSession"]["accessToken"].as_str().map(String::from);

    let buyer = app.register().await;
    let first = access(&refresh(&app, &buyer.refresh_token).await).expect("refreshed");
    let second = access(&refresh(&app, &buyer.refresh_token).await).expect("the second tab");
    let third = refresh(&app, &buyer.refresh_token).await;
    assert_eq!(code(&third), "UNAUTHENTICATED", "a third use: {third}");
    for token in [&first, &second] {
        assert_eq!(code(&me(&app, token).await), "UNAUTHENTICATED", "the session ended");
    }

    // A copy presented after the legitimate client already used the new token.
    let buyer = app.register().await;
    let r = refresh(&app, &buyer.refresh_token).await;
    let next = r["data"]["refreshSession"]["refreshToken"].as_str().unwrap().to_string();
    let latest = access(&refresh(&app, &next).await).expect("rotated again");
    let copy = refresh(&app, &buyer.refresh_token).await;
    assert_eq!(code(&copy), "UNAUTHENTICATED", "{copy}");
    assert_eq!(code(&me(&app, &latest).await), "UNAUTHENTICATED", "the session ended");
    app.stop().await;
}

/// Past the window, presenting a spent token again is what it always was: a copied token, and the
/// whole session ends.
#[tokio::test]
async fn a_reuse_after_the_grace_window_still_ends_the_session() {
    let app = spawn_app_with(|c| c.api.auth.refresh_reuse_grace = Duration::from_millis(200)).await;
    let buyer = app.register().await;
    let first = refresh(&app, &buyer.refresh_token).await;
    let access2 = first["data"]["refreshSession"]["accessToken"].as_str().expect("refreshed").to_string();
    // Well past the 200 ms window (a wait in this direction cannot come too early).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let reused = refresh(&app, &buyer.refresh_token).await;
    assert_eq!(code(&reused), "UNAUTHENTICATED", "{reused}");
    assert_eq!(code(&me(&app, &access2).await), "UNAUTHENTICATED", "the session ended");
    app.stop().await;
}

#[tokio::test]
async fn logout_ends_the_session_and_only_that_session() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    let login = app.gql(None, LOGIN, json!({ "e": buyer.email, "p": "correct horse battery" })).await;
    let other_session = login["data"]["login"]["accessToken"].as_str().unwrap().to_string();

    let anon = app.gql(None, "mutation { logout }", json!({})).await;
    assert_eq!(code(&anon), "UNAUTHENTICATED");
    let out = app.data(Some(&buyer.token), "mutation { logout }", json!({})).await;
    assert_eq!(out["logout"], true);

    let body = me(&app, &buyer.token).await;
    assert_eq!(code(&body), "UNAUTHENTICATED");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("session has ended"), "{body}");
    assert_eq!(code(&refresh(&app, &buyer.refresh_token).await), "UNAUTHENTICATED");
    assert_eq!(me(&app, &other_session).await["data"]["me"]["id"], buyer.id.as_str(), "other session lives");
    app.stop().await;
}

#[tokio::test]
async fn login_is_limited_per_account_whether_or_not_it_exists() {
    let app = spawn_app_with(|c| {
        c.api.auth.rate_limits.login_per_account = 3;
        c.api.auth.rate_limits.window = Duration::from_secs(60);
    })
    .await;
    let buyer = app.register().await;
    for email in [buyer.email.as_str(), "nobody-here@example.com"] {
        for _ in 0..3 {
            let wrong = app.gql(None, LOGIN, json!({ "e": email, "p": "wrong password" })).await;
            assert_eq!(code(&wrong), "UNAUTHENTICATED", "{wrong}");
        }
        // Over the limit even with the right password, and the same for an unknown account.
        let limited = app.gql(None, LOGIN, json!({ "e": email, "p": "correct horse battery" })).await;
        assert_eq!(code(&limited), "TOO_MANY_REQUESTS", "{email}: {limited}");
        let wait = limited["errors"][0]["extensions"]["retryAfterSeconds"].as_u64().unwrap();
        assert!((1..=60).contains(&wait), "{limited}");
    }
    // Case and spaces do not make a new budget.
    let upper =
        app.gql(None, LOGIN, json!({ "e": format!(" {} ", buyer.email.to_uppercase()), "p": "x" })).await;
    assert_eq!(code(&upper), "TOO_MANY_REQUESTS");
    // Another account is not affected.
    let other = app.register().await;
    let ok = app.gql(None, LOGIN, json!({ "e": other.email, "p": "correct horse battery" })).await;
    assert!(ok["data"]["login"]["accessToken"].is_string(), "{ok}");

    // When the window has passed, the account can log in again.
    sqlx::query("UPDATE rate_limits SET window_start = now() - interval '61 seconds'")
        .execute(app.pool())
        .await
        .unwrap();
    let again = app.gql(None, LOGIN, json!({ "e": buyer.email, "p": "correct horse battery" })).await;
    assert!(again["data"]["login"]["accessToken"].is_string(), "{again}");
    app.stop().await;
}

/// What somebody types at login is kept nowhere: the per-account counter (a row of
/// `rate_limits`, and the key the "rate limit reached" log line prints) is keyed by a digest of
/// the address, not the address.
#[tokio::test]
async fn the_address_typed_at_login_is_not_kept_in_the_counters() {
    let app = spawn_app_with(|c| c.api.auth.rate_limits.login_per_account = 1).await;
    for _ in 0..2 {
        let r = app.gql(None, LOGIN, json!({ "e": "Typed.Secret@Example.com", "p": "wrong password" })).await;
        assert!(code(&r) == "UNAUTHENTICATED" || code(&r) == "TOO_MANY_REQUESTS", "{r}");
    }
    let r = app.gql(None, LOGIN, json!({ "e": "typed.secret@example.com", "p": "wrong password" })).await;
    assert_eq!(code(&r), "TOO_MANY_REQUESTS", "the same account however it is written: {r}");
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT key FROM rate_limits").fetch_all(app.pool()).await.unwrap();
    assert!(keys.iter().any(|k| k.starts_with("login:acct:")), "{keys:?}");
    assert!(keys.iter().all(|k| !k.to_lowercase().contains("typed.secret")), "{keys:?}");
    app.stop().await;
}

#[tokio::test]
async fn login_and_register_are_limited_per_client_address() {
    let app = spawn_app_with(|c| {
        c.api.auth.rate_limits.login_per_address = 4;
        c.api.auth.rate_limits.register_per_address = 2;
        // One proxy in front, appending the address it saw to X-Forwarded-For.
        c.api.trusted_proxy_hops = 1;
    })
    .await;
    let post = |query: &'static str, vars: Value, from: &'static str| {
        let req = app.http.post(app.url("/graphql")).header("x-forwarded-for", from);
        async move {
            req.json(&json!({ "query": query, "variables": vars }))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    for i in 0..4 {
        let r =
            post(LOGIN, json!({ "e": format!("n{i}@example.com"), "p": "wrong password" }), "203.0.113.7")
                .await;
        assert_eq!(code(&r), "UNAUTHENTICATED", "{r}");
    }
    let r = post(LOGIN, json!({ "e": "n9@example.com", "p": "wrong password" }), "203.0.113.7").await;
    assert_eq!(code(&r), "TOO_MANY_REQUESTS", "{r}");
    let r = post(LOGIN, json!({ "e": "n9@example.com", "p": "wrong password" }), "198.51.100.1").await;
    assert_eq!(code(&r), "UNAUTHENTICATED", "another address has its own budget: {r}");
    // A client cannot pick a fresh budget by writing its own entry left of the proxy's.
    for forged in ["198.51.100.1, 203.0.113.7", "unknown, 203.0.113.7", "10.0.0.1,203.0.113.7"] {
        let r = post(LOGIN, json!({ "e": "n9@example.com", "p": "wrong password" }), forged).await;
        assert_eq!(code(&r), "TOO_MANY_REQUESTS", "forged leftmost entry in {forged:?}: {r}");
    }

    let users_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(app.pool()).await.unwrap();
    for i in 0..2 {
        let r = post(
            REGISTER,
            json!({ "e": format!("r{i}@example.com"), "p": "correct horse battery" }),
            "203.0.113.8",
        )
        .await;
        assert!(r["data"]["register"]["accessToken"].is_string(), "{r}");
    }
    let r =
        post(REGISTER, json!({ "e": "r2@example.com", "p": "correct horse battery" }), "203.0.113.8").await;
    assert_eq!(code(&r), "TOO_MANY_REQUESTS", "{r}");
    let r = post(
        REGISTER,
        json!({ "e": "r3@example.com", "p": "correct horse battery" }),
        "6.6.6.6, 203.0.113.8",
    )
    .await;
    assert_eq!(code(&r), "TOO_MANY_REQUESTS", "a forged leftmost entry does not reset the count: {r}");
    // The same with the client's entry on a header line of its own, before the proxy's line.
    let r = app
        .http
        .post(app.url("/graphql"))
        .header("x-forwarded-for", "6.6.6.7")
        .header("x-forwarded-for", "203.0.113.8")
        .json(&json!({ "query": REGISTER, "variables": { "e": "r4@example.com", "p": "correct horse battery" } }))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(code(&r), "TOO_MANY_REQUESTS", "two header lines are one list: {r}");
    let users_after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(app.pool()).await.unwrap();
    assert_eq!(users_after, users_before + 2, "the refused registration created nothing");
    app.stop().await;
}

/// Median of the durations of `n` runs of `f`.
async fn median<F: std::future::Future<Output = Value>>(n: usize, mut f: impl FnMut() -> F) -> Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let body = f().await;
        times.push(t.elapsed());
        assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");
    }
    times.sort();
    times[n / 2]
}

#[tokio::test]
async fn unknown_accounts_and_wrong_passwords_look_alike() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    let wrong = app.gql(None, LOGIN, json!({ "e": buyer.email, "p": "wrong password" })).await;
    let unknown = app.gql(None, LOGIN, json!({ "e": "ghost@example.com", "p": "wrong password" })).await;
    let malformed = app.gql(None, LOGIN, json!({ "e": "not an email", "p": "wrong password" })).await;
    for body in [&wrong, &unknown, &malformed] {
        assert_eq!(body["errors"], wrong["errors"], "same error, word for word");
    }
    // Both paths do the argon2 work: without the dummy hash an unknown account answers ~20x faster.
    // (A ratio of two medians on one machine, not a speed threshold.)
    let known = median(5, || app.gql(None, LOGIN, json!({ "e": buyer.email, "p": "wrong password" }))).await;
    let ghost =
        median(5, || app.gql(None, LOGIN, json!({ "e": "ghost@example.com", "p": "wrong password" }))).await;
    assert!(
        ghost.as_secs_f64() > known.as_secs_f64() * 0.4,
        "unknown account answered in {ghost:?}, existing one in {known:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn introspection_and_playground_are_off_when_configured() {
    let dev = spawn_app().await;
    let page = dev.http.get(dev.url("/graphql")).send().await.unwrap();
    assert_eq!(page.status(), 200, "GraphiQL in development");
    let types = dev.gql(None, "{ __schema { types { name } } }", json!({})).await;
    assert!(types["data"]["__schema"]["types"].is_array(), "{types}");
    // In development a misspelt field gets a suggestion...
    let body = dev.gql(None, "{ products { nodes { nam } } }", json!({})).await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("Did you mean \"name\""), "{body}");
    dev.stop().await;

    let prod = spawn_app_with(|c| {
        c.api.graphql.introspection = false;
        c.api.graphql.playground = false;
    })
    .await;
    let page = prod.http.get(prod.url("/graphql")).send().await.unwrap();
    assert!(page.status().is_client_error(), "no GraphiQL: {}", page.status());
    let types = prod.gql(None, "{ __schema { types { name } } }", json!({})).await;
    assert!(types["data"]["__schema"].is_null(), "{types}");
    let typename = prod.gql(None, "{ __type(name: \"Order\") { fields { name } } }", json!({})).await;
    assert!(typename["data"]["__type"].is_null(), "{typename}");
    // ...which in production would name the fields introspection is off to hide.
    let body = prod.gql(None, "{ products { nodes { nam } } }", json!({})).await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("\"nam\"") && !message.contains("Did you mean"), "{body}");
    assert_eq!(code(&body), "BAD_USER_INPUT");
    let asset = prod.http.get(prod.url("/graphql/assets/graphiql.min.js")).send().await.unwrap();
    assert_eq!(asset.status(), 404, "no playground assets either");
    // The API itself still works.
    assert!(
        prod.data(None, "{ products { nodes { sku } } }", json!({})).await["products"]["nodes"].is_array()
    );
    prod.stop().await;
}

#[tokio::test]
async fn aliases_complexity_and_batches_are_limited() {
    let app = spawn_app().await;
    let aliased = |n: usize| {
        format!(
            "{{ {} }}",
            (0..n)
                .map(|i| format!("a{i}: products(first: 1) {{ nodes {{ sku }} }}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    };
    assert!(app.gql(None, &aliased(30), json!({})).await.get("errors").is_none());
    let too_many = app.gql(None, &aliased(31), json!({})).await;
    assert_eq!(code(&too_many), "BAD_USER_INPUT");
    assert!(too_many["errors"][0]["message"].as_str().unwrap().contains("aliases"), "{too_many}");
    // A login per alias does not multiply attempts past the limit either.
    let logins = format!(
        "mutation {{ {} }}",
        (0..31)
            .map(|i| format!("l{i}: login(email: \"x@example.com\", password: \"p\") {{ accessToken }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert_eq!(code(&app.gql(None, &logins, json!({})).await), "BAD_USER_INPUT");

    // Lists cost `first` times their selection: 100 products with everything, three times, is too much.
    let expensive = "{ a: products(first: 100) { nodes { sku name price { amountMinor currency } stockLevel } }
                       b: products(first: 100) { nodes { sku name price { amountMinor currency } stockLevel } } }";
    let body = app.gql(None, expensive, json!({})).await;
    assert_eq!(code(&body), "BAD_USER_INPUT");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("complex"), "{body}");

    let batch = |n: usize| {
        json!((0..n)
            .map(|_| json!({ "query": "{ products(first: 1) { nodes { sku } } }" }))
            .collect::<Vec<_>>())
    };
    let two: Value =
        app.http.post(app.url("/graphql")).json(&batch(2)).send().await.unwrap().json().await.unwrap();
    assert_eq!(two.as_array().map(Vec::len), Some(2), "{two}");
    let eleven: Value =
        app.http.post(app.url("/graphql")).json(&batch(11)).send().await.unwrap().json().await.unwrap();
    assert_eq!(code(&eleven), "BAD_USER_INPUT", "{eleven}");
    assert!(eleven["errors"][0]["message"].as_str().unwrap().contains("Batch"), "{eleven}");
    app.stop().await;
}

#[tokio::test]
async fn internal_errors_say_nothing_about_the_internals() {
    let app = spawn_app().await;
    let buyer = app.register().await;
    // Break the store under the API: the orders table disappears.
    sqlx::query("ALTER TABLE orders RENAME TO orders_hidden").execute(app.pool()).await.unwrap();
    let body = app.gql(Some(&buyer.token), "{ orders { nodes { id } } }", json!({})).await;
    assert_eq!(code(&body), "INTERNAL", "{body}");
    let text = body.to_string();
    assert_eq!(body["errors"][0]["message"], "internal error");
    // (`orders` itself appears as the GraphQL path of the error, which is the client's own field.)
    for leak in ["relation", "SELECT", "sqlx", "database", "postgres", "42P01", "panicked", ".rs:"] {
        assert!(!text.contains(leak), "{leak:?} leaked: {text}");
    }
    sqlx::query("ALTER TABLE orders_hidden RENAME TO orders").execute(app.pool()).await.unwrap();
    app.stop().await;
}

/// Runs the `api` binary against the test's database with `stdin` as its standard input.
async fn api_command(app: &TestApp, args: &[&str], stdin: &str) -> std::process::Output {
    use ecommerce_platform::config::ExposeSecret;
    use std::io::Write;
    let database = app.config().postgres.url.expose_secret().to_string();
    let (args, stdin) = (args.iter().map(|s| s.to_string()).collect::<Vec<_>>(), stdin.to_string());
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_api"))
            .args(&args)
            .env("DATABASE_URL", database)
            .env("APP_ENV", "development")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("api runs");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

async fn roles(app: &TestApp, email: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT roles FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(app.pool())
        .await
        .unwrap()
}

/// `api create-operator` never hands the operator role to an account someone else registered
/// first (it used to say "exists; password unchanged" and grant the role, so whoever registered
/// the address became an operator with their own password). An existing account is promoted only
/// with `--promote-existing`, which shows whose account it is.
#[tokio::test]
async fn create_operator_refuses_to_promote_an_account_it_did_not_create() {
    let app = spawn_app().await;
    let squatter = app.register().await;
    let out =
        api_command(&app, &["create-operator", "--email", &squatter.email], "operator password 1\n").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an existing account was accepted: {stderr}");
    assert!(stderr.contains("--promote-existing"), "{stderr}");
    assert!(roles(&app, &squatter.email).await.is_empty(), "the squatter became an operator");

    // A new address: created with the password read, and an operator.
    let email = format!("op-{}@example.com", uuid::Uuid::new_v4().simple());
    let out = api_command(&app, &["create-operator", "--email", &email], "operator password 1\n").await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(roles(&app, &email).await, ["operator"]);
    let login = |p: &'static str| {
        let email = email.clone();
        let app = &app;
        async move { app.gql(None, LOGIN, json!({ "e": email, "p": p })).await }
    };
    assert!(login("operator password 1").await["data"]["login"]["accessToken"].is_string());
    // Again (scripts/dev.sh runs it at every start): an operator already, nothing changes.
    let out = api_command(&app, &["create-operator", "--email", &email], "another password 2\n").await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(login("operator password 1").await["data"]["login"]["accessToken"].is_string(), "password kept");

    // Promoting an existing account on purpose names the account first.
    let out =
        api_command(&app, &["create-operator", "--email", &squatter.email, "--promote-existing"], "").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(&squatter.email)
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert!(stdout.contains(&id.to_string()) && stdout.contains("registered"), "{stdout}");
    assert_eq!(roles(&app, &squatter.email).await, ["operator"]);
    app.stop().await;
}

/// A registration over graphql-ws from `from` (as the proxy's X-Forwarded-For says), anonymous.
async fn register_over_websocket(app: &TestApp, from: &str, email: &str) -> Value {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let mut req = app.url("/graphql/ws").replacen("http", "ws", 1).into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    req.headers_mut().insert("x-forwarded-for", from.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(req).await.expect("ws connect");
    let init = json!({ "type": "connection_init", "payload": {} });
    let subscribe = json!({ "id": "r", "type": "subscribe", "payload": {
        "query": REGISTER, "variables": { "e": email, "p": "correct horse battery" } } });
    socket.send(Message::Text(init.to_string().into())).await.unwrap();
    socket.send(Message::Text(subscribe.to_string().into())).await.unwrap();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), socket.next()).await.expect("in time");
        let Some(Ok(Message::Text(t))) = msg else { panic!("connection ended: {msg:?}") };
        let m: Value = serde_json::from_str(&t).unwrap();
        match m["type"].as_str() {
            Some("next") => return m["payload"].clone(),
            Some("error") => return json!({ "errors": m["payload"] }),
            _ => continue,
        }
    }
}

/// Logins and registrations over graphql-ws count against the client's address as over HTTP
/// (they counted as 127.0.0.1: one budget shared by every WebSocket client, and none of the
/// address's own), and IPv6 clients are counted by their /64 (one subscriber has a whole /64 and
/// could take a fresh address for every attempt).
#[tokio::test]
async fn websocket_mutations_and_ipv6_neighbours_count_against_their_address() {
    let app = spawn_app_with(|c| {
        c.api.auth.rate_limits.register_per_address = 2;
        c.api.trusted_proxy_hops = 1;
    })
    .await;
    let register = |from: &'static str, email: String| {
        let req = app.http.post(app.url("/graphql")).header("x-forwarded-for", from);
        async move {
            let vars = json!({ "e": email, "p": "correct horse battery" });
            req.json(&json!({ "query": REGISTER, "variables": vars }))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let email = |n: &str| format!("{n}-{}@example.com", uuid::Uuid::new_v4().simple());

    for from in ["2001:db8:1:2::1", "2001:db8:1:2:ffff:1:2:3"] {
        let r = register(from, email("v6")).await;
        assert!(r["data"]["register"]["accessToken"].is_string(), "{r}");
    }
    let r = register("2001:db8:1:2:abcd::9", email("v6")).await;
    assert_eq!(code(&r), "TOO_MANY_REQUESTS", "a third address of the same /64: {r}");
    let r = register("2001:db8:1:3::1", email("v6")).await;
    assert!(r["data"]["register"]["accessToken"].is_string(), "another /64 has its own budget: {r}");

    for _ in 0..2 {
        let r = register("203.0.113.9", email("ws")).await;
        assert!(r["data"]["register"]["accessToken"].is_string(), "{r}");
    }
    let r = register_over_websocket(&app, "203.0.113.9", &email("ws")).await;
    assert_eq!(code(&r), "TOO_MANY_REQUESTS", "over graphql-ws from the same address: {r}");
    let r = register_over_websocket(&app, "203.0.113.10", &email("ws")).await;
    assert!(r["data"]["register"]["accessToken"].is_string(), "another address over graphql-ws: {r}");
    app.stop().await;
}

/// A buyer can neither place orders nor change the cart without bound, nor hold the stock of
/// many orders whose payment never answers: per user, placeOrder and cart mutations are rate
/// limited, and orders still being checked out are bounded (the next one is refused and reserves
/// nothing). Other buyers are not held back.
#[tokio::test]
async fn buyers_are_limited_in_orders_cart_changes_and_orders_waiting_for_payment() {
    let app = spawn_app_with(|c| {
        c.api.auth.rate_limits.place_order_per_user = 3;
        c.api.auth.rate_limits.cart_writes_per_user = 4;
        c.api.auth.rate_limits.open_orders_per_user = 2;
    })
    .await;
    let buyer = app.register().await;
    let before = app.stock("MUG-001").await;
    for i in 0..2 {
        app.add_to_cart(&buyer, "MUG-001", 1).await;
        let placed = app.place_order(&buyer, &format!("hold-{i}"), "tok_timeout").await;
        assert!(placed["data"]["placeOrder"]["order"]["id"].is_string(), "{placed}");
    }
    // Both hold their unit while the payment does not answer.
    let stock = before - 2;
    for _ in 0..300 {
        if app.stock("MUG-001").await == stock {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(app.stock("MUG-001").await, stock);
    app.add_to_cart(&buyer, "MUG-001", 1).await;
    let third = app.place_order(&buyer, "hold-2", "tok_timeout").await;
    let errors = &third["data"]["placeOrder"]["userErrors"];
    assert_eq!(errors[0]["code"], "TOO_MANY_OPEN_ORDERS", "{third}");
    assert!(third["data"]["placeOrder"]["order"].is_null(), "{third}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(app.stock("MUG-001").await, stock, "the refused order reserved nothing");
    assert_eq!(app.cart(&buyer).await["itemCount"], 1, "and left the cart as it was");

    // The fourth placement in the window is over the rate limit, whatever it would have been.
    let fourth = app.place_order(&buyer, "hold-3", "tok_visa").await;
    assert_eq!(code(&fourth), "TOO_MANY_REQUESTS", "{fourth}");
    assert!(fourth["errors"][0]["extensions"]["retryAfterSeconds"].as_u64().unwrap() > 0, "{fourth}");
    // Three cart writes so far: the fourth is the last one allowed.
    let r = app.add_to_cart(&buyer, "PEN-004", 1).await;
    assert_eq!(r["data"]["addToCart"]["cart"]["itemCount"], 2, "{r}");
    let r = app.add_to_cart(&buyer, "PEN-004", 1).await;
    assert_eq!(code(&r), "TOO_MANY_REQUESTS", "{r}");
    assert_eq!(app.cart(&buyer).await["itemCount"], 2, "the refused write changed nothing");

    let other = app.register().await;
    app.add_to_cart(&other, "MUG-001", 1).await;
    let theirs = app.place_order(&other, "theirs", "tok_visa").await;
    assert!(theirs["data"]["placeOrder"]["order"]["id"].is_string(), "{theirs}");
    app.stop().await;
}
