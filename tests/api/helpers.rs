//! Spawns the real application (API, orchestrator and workers as separate tasks that share nothing
//! but PostgreSQL, MongoDB and NATS) against its own database, Mongo database and broker namespace,
//! so tests run in parallel. Logs go nowhere unless `TEST_LOG=1`.

use std::sync::Arc;
use std::time::Duration;

use ecommerce_checkout::roles::{self, Services};
use ecommerce_core::saga::messages::{Body, Command, DomainEvent, Envelope};
use ecommerce_platform::broker::Topic;
use ecommerce_platform::config::{Config, ExposeSecret};
use ecommerce_platform::metrics::ConsumerStats;
use ecommerce_saga::app;
use ecommerce_storefront::catalog::seed;
use ecommerce_storefront::mongo::Mongo;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    /// The API's admin listener (`/metrics`, `/readyz`).
    pub admin_addr: std::net::SocketAddr,
    pub http: reqwest::Client,
    pub services: Services,
    /// The API's MongoDB connection (carts, catalog).
    pub mongo: Mongo,
    /// Counts of the workers' consumers.
    pub stats: Arc<ConsumerStats>,
    /// Counts of the orchestrator's reply consumer.
    pub orchestrator_stats: Arc<ConsumerStats>,
    /// Connections the API took from its pool: one per query outside a transaction, one per
    /// transaction.
    pub api_queries: Arc<std::sync::atomic::AtomicU64>,
    /// Commands the API's MongoDB client sent.
    pub api_mongo_commands: Arc<std::sync::atomic::AtomicU64>,
    /// Those of them on the `carts` collection.
    pub api_cart_commands: Arc<std::sync::atomic::AtomicU64>,
    api_metrics: Arc<ecommerce_platform::metrics::Metrics>,
    /// The orchestrator's and the workers' metrics.
    pub orchestrator_metrics: Arc<ecommerce_platform::metrics::Metrics>,
    pub worker_metrics: Arc<ecommerce_platform::metrics::Metrics>,
    name: String,
    config: Config,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub token: String,
    pub refresh_token: String,
}

fn init_logs() {
    if std::env::var("TEST_LOG").is_ok() {
        app::init_tracing();
    }
}

/// A config for one test: generous step timeouts so a slow machine never retries by accident.
pub fn test_config(name: &str) -> Config {
    let mut c = Config::from_env().expect("config");
    c.postgres.url = format!("postgres://postgres@127.0.0.1:5432/{name}").into();
    c.postgres.max_connections = 5;
    c.mongo.database = name.to_string();
    c.broker.namespace = name.to_string();
    c.api.addr = "127.0.0.1:0".parse().unwrap();
    // The suite runs once per transport: TEST_BROKER=nats|rabbitmq|kafka|memory (default nats);
    // `memory` is the in-process transport, as in `api all`.
    let broker = std::env::var("TEST_BROKER").unwrap_or_else(|_| "nats".into());
    c.broker.kind = ecommerce_platform::config::BrokerKind::parse(&broker)
        .expect("TEST_BROKER is nats, rabbitmq, kafka or memory");
    c.saga.step_timeout = Duration::from_secs(30);
    c.saga.compensation_timeout = Duration::from_secs(30);
    c.outbox.poll_interval = Duration::from_millis(20);
    c.orchestrator.timeout_scan_interval = Duration::from_millis(100);
    // Every test client is 127.0.0.1; tests of the limits set their own.
    c.api.auth.rate_limits.register_per_address = 1_000_000;
    c.api.auth.rate_limits.login_per_address = 1_000_000;
    // Test buyers place and change much more than a person does; tests of these limits set theirs.
    c.api.auth.rate_limits.place_order_per_user = 1_000_000;
    c.api.auth.rate_limits.cart_writes_per_user = 1_000_000;
    c.api.auth.rate_limits.open_orders_per_user = 1_000_000;
    c
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tune: impl FnOnce(&mut Config)) -> TestApp {
    init_logs();
    let name = format!("t_{}", &Uuid::new_v4().simple().to_string()[..20]);
    let mut config = test_config(&name);
    tune(&mut config);

    let mut admin =
        PgConnection::connect(ADMIN_URL).await.expect("PostgreSQL reachable (scripts/services.sh up)");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create database");
    admin.close().await.ok();
    ecommerce_platform::postgres::migrate(&config).await.expect("migrate");

    // Each role gets its own connections: they share only the stores and the broker.
    let mut api = Services::connect(config.clone()).await.expect("api services");
    // The API's pool counts what it hands out (tests/api/dataloader.rs reads it): idle connections
    // pass `before_acquire`, new ones `after_connect` only, and both are handed out.
    let api_queries = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (reused, opened) = (api_queries.clone(), api_queries.clone());
    api.pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(config.postgres.max_connections)
        .before_acquire(move |_, _| {
            reused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async { Ok(true) })
        })
        .after_connect(move |_, _| {
            opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        })
        .connect(config.postgres.url.expose_secret())
        .await
        .expect("api pool");
    let orch = Services::connect(config.clone()).await.expect("orchestrator services");
    let workers = Services::connect(config.clone()).await.expect("worker services");
    // The API's MongoDB client counts the commands it sends (tests/api/idle.rs reads it).
    let api_mongo_commands = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let api_cart_commands = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (counted, on_carts) = (api_mongo_commands.clone(), api_cart_commands.clone());
    let api_mongo = Mongo::open_with(&config, move |o| {
        o.command_event_handler = Some(mongodb::event::EventHandler::callback(move |e| {
            if let mongodb::event::command::CommandEvent::Started(e) = e {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // A command names its collection as the value of its first key: `{find: "carts"}`.
                if e.command.get_str(&e.command_name) == Ok("carts") {
                    on_carts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }));
    })
    .await
    .expect("api MongoDB");
    let workers_mongo = Mongo::open(&config).await.expect("workers MongoDB");
    seed::seed(&api.pool, &api_mongo, &seed::demo_products()).await.expect("seed");

    let shutdown = CancellationToken::new();
    let stats = Arc::new(ConsumerStats::default());
    let orchestrator_stats = Arc::new(ConsumerStats::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let mut tasks = Vec::new();
    let s = shutdown.clone();
    let api_metrics = api.metrics.clone();
    let (orchestrator_metrics, worker_metrics) = (orch.metrics.clone(), workers.metrics.clone());
    let (api_services, mongo) = (api.clone(), api_mongo.clone());
    tasks.push(tokio::spawn(async move {
        app::run_api(api_services, mongo, listener, Some(admin), s).await.expect("api runs");
    }));
    tasks.push(tokio::spawn(roles::run_orchestrator(orch, orchestrator_stats.clone(), shutdown.clone())));
    tasks.push(tokio::spawn(ecommerce_storefront::roles::run_workers(
        workers,
        workers_mongo,
        ecommerce_checkout::payment::configured_gateway(&config).expect("payment gateway"),
        stats.clone(),
        shutdown.clone(),
    )));

    let app = TestApp {
        addr,
        admin_addr,
        http: reqwest::Client::new(),
        services: api,
        mongo: api_mongo,
        api_queries,
        api_mongo_commands,
        api_cart_commands,
        api_metrics,
        orchestrator_metrics,
        worker_metrics,
        stats,
        orchestrator_stats,
        name,
        config,
        shutdown,
        tasks,
    };
    for _ in 0..100 {
        if app.http.get(app.url("/healthz")).send().await.is_ok() {
            app.warm_up().await;
            return app;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("API did not start");
}

impl TestApp {
    /// Sends a harmless message through every consumer and waits until each handled it, so a test
    /// does not measure a broker's consumer-group join (Kafka) against a saga's step timeout.
    async fn warm_up(&self) {
        let nobody = Uuid::now_v7();
        let t = &self.services.transport;
        for (topic, body) in [
            (Topic::StockCommands, Body::Command(Command::ReleaseStock)),
            (Topic::PaymentCommands, Body::Command(Command::VoidPayment)),
            (
                Topic::OrderEvents,
                Body::Event(DomainEvent::OrderConfirmed { user_id: nobody, skus: vec![], lines: vec![] }),
            ),
        ] {
            let env = Envelope::new(nobody, nobody, "warm-up", body);
            t.publish(topic, "warm-up", env.encode().into()).await.expect("publish warm-up");
        }
        // Three worker messages; two replies (release, void) reach the orchestrator.
        for _ in 0..1200 {
            if self.stats.handled() + self.stats.duplicates() >= 3 && self.orchestrator_stats.handled() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(self.orchestrator_stats.handled() >= 2, "consumers did not start within 60 s");
        for s in [&self.stats, &self.orchestrator_stats] {
            s.handled.store(0, std::sync::atomic::Ordering::SeqCst);
            s.duplicates.store(0, std::sync::atomic::Ordering::SeqCst);
        }
        sqlx::query("DELETE FROM stock_reservations").execute(self.pool()).await.unwrap();
        sqlx::query("DELETE FROM payments").execute(self.pool()).await.unwrap();
        sqlx::query("DELETE FROM inbox").execute(self.pool()).await.unwrap();
    }

    /// Starts another API instance on the same stores and broker, with its own connections;
    /// returns its address and its metrics. It stops with the app.
    pub async fn replica(&mut self) -> (std::net::SocketAddr, Arc<ecommerce_platform::metrics::Metrics>) {
        let s = Services::connect(self.config.clone()).await.expect("replica services");
        let mongo = Mongo::open(&self.config).await.expect("replica MongoDB");
        let metrics = s.metrics.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = self.shutdown.clone();
        self.tasks.push(tokio::spawn(async move {
            app::run_api(s, mongo, listener, None, stop).await.expect("replica runs");
        }));
        for _ in 0..100 {
            if self.http.get(format!("http://{addr}/healthz")).send().await.is_ok() {
                return (addr, metrics);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("replica did not start");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A URL on the API's admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    /// The test's own PostgreSQL database.
    pub fn database(&self) -> &str {
        &self.name
    }

    /// The configuration the roles run with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The API process's metrics.
    pub fn metrics(&self) -> &ecommerce_platform::metrics::Metrics {
        &self.api_metrics
    }

    pub fn pool(&self) -> &sqlx::PgPool {
        &self.services.pool
    }

    /// Stops every role and removes the test's database, Mongo database and stream.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), t).await.is_err() {
                abort.abort(); // e.g. a handler still waiting on a gateway that never answers
            }
        }
        let _ = self.services.transport.destroy().await;
        let _ = self.mongo.db.drop().await;
        self.services.pool.close().await;
        if let Ok(mut admin) = PgConnection::connect(ADMIN_URL).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
                .execute(&mut admin)
                .await;
        }
    }

    /// Sends a GraphQL request; returns the whole response body.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        self.gql_at(self.addr, token, query, variables).await
    }

    /// [`gql`] through the API instance at `addr` (a [`TestApp::replica`]).
    pub async fn gql_at(
        &self,
        addr: std::net::SocketAddr,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> Value {
        let mut req = self
            .http
            .post(format!("http://{addr}/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        resp.json().await.expect("json body")
    }

    /// Like [`gql`] but panics on errors and returns `data`.
    pub async fn data(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let body = self.gql(token, query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    pub async fn register(&self) -> User {
        let email = format!("buyer-{}@example.com", Uuid::new_v4().simple());
        let d = self
            .data(
                None,
                "mutation($e: String!, $p: String!) { register(email: $e, password: $p) { accessToken refreshToken user { id email } } }",
                json!({ "e": email, "p": Self::PASSWORD }),
            )
            .await;
        User {
            id: d["register"]["user"]["id"].as_str().unwrap().to_string(),
            email,
            token: d["register"]["accessToken"].as_str().unwrap().to_string(),
            refresh_token: d["register"]["refreshToken"].as_str().unwrap().to_string(),
        }
    }

    /// The password of every account `register` creates.
    pub const PASSWORD: &'static str = "correct horse battery";

    /// A new account with the operator role, signed in again so its token carries the role.
    pub async fn operator(&self) -> User {
        let mut user = self.register().await;
        ecommerce_saga::auth::service::set_role(
            self.pool(),
            &user.email,
            ecommerce_saga::auth::Role::Operator,
            true,
        )
        .await
        .expect("grant operator");
        let d = self
            .data(
                None,
                "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken refreshToken user { roles } } }",
                json!({ "e": user.email, "p": Self::PASSWORD }),
            )
            .await;
        assert_eq!(d["login"]["user"]["roles"], json!(["OPERATOR"]));
        user.token = d["login"]["accessToken"].as_str().unwrap().to_string();
        user.refresh_token = d["login"]["refreshToken"].as_str().unwrap().to_string();
        user
    }

    pub async fn add_to_cart(&self, user: &User, sku: &str, quantity: i64) -> Value {
        self.gql(
            Some(&user.token),
            "mutation($s: String!, $q: Int!) { addToCart(sku: $s, quantity: $q) { cart { itemCount items { sku quantity } total { amountMinor currency } } userErrors { code field message } } }",
            json!({ "s": sku, "q": quantity }),
        )
        .await
    }

    pub async fn cart(&self, user: &User) -> Value {
        self.data(Some(&user.token), "{ cart { itemCount items { sku quantity } } }", json!({})).await["cart"]
            .clone()
    }

    pub async fn place_order(&self, user: &User, key: &str, payment_token: &str) -> Value {
        self.gql(
            Some(&user.token),
            "mutation($k: String!, $t: String!) { placeOrder(idempotencyKey: $k, paymentToken: $t) { order { id status total { amountMinor currency } } userErrors { code field message } } }",
            json!({ "k": key, "t": payment_token }),
        )
        .await
    }

    /// Places an order and returns its id, panicking on errors.
    pub async fn place(&self, user: &User, key: &str, payment_token: &str) -> String {
        let body = self.place_order(user, key, payment_token).await;
        assert!(body.get("errors").is_none(), "placeOrder failed: {body}");
        assert_eq!(body["data"]["placeOrder"]["userErrors"], json!([]), "placeOrder refused: {body}");
        body["data"]["placeOrder"]["order"]["id"].as_str().unwrap().to_string()
    }

    pub async fn order(&self, user: &User, id: &str) -> Value {
        self.gql(
            Some(&user.token),
            "query($id: ID!) { order(id: $id) { id status cancelReason total { amountMinor } lines { sku quantity product { name } } saga { id status failureReason events { sequence type detail } } } }",
            json!({ "id": id }),
        )
        .await
    }

    /// Polls the order until it leaves PENDING (at most 60 s) and returns it.
    /// The `detail` of each event of the order's saga of `kind` (`CHECKOUT`, `REFUND`), as an
    /// operator reads them (buyers get `null`).
    pub async fn operator_details(&self, op: &User, order_id: &str, kind: &str) -> Vec<Value> {
        let q = "query($o: ID!, $t: SagaType!) { sagas(filter: { orderId: $o, type: $t }) { nodes { events { detail } } } }";
        let d = self.data(Some(&op.token), q, json!({ "o": order_id, "t": kind })).await;
        d["sagas"]["nodes"][0]["events"].as_array().unwrap().iter().map(|e| e["detail"].clone()).collect()
    }

    pub async fn wait_terminal(&self, user: &User, id: &str) -> Value {
        for _ in 0..600 {
            let body = self.order(user, id).await;
            let order = body["data"]["order"].clone();
            if order["status"] != "PENDING"
                && order["saga"]["status"].as_str().is_some_and(|s| s == "COMPLETED" || s == "COMPENSATED")
            {
                return order;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("order {id} never finished: {}", self.order(user, id).await);
    }

    /// Polls the user's cart until `done` says so (at most 10 s); returns the last one seen.
    pub async fn wait_cart(&self, user: &User, done: impl Fn(&Value) -> bool) -> Value {
        let mut cart = self.cart(user).await;
        for _ in 0..100 {
            if done(&cart) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            cart = self.cart(user).await;
        }
        cart
    }

    pub async fn stock(&self, sku: &str) -> i32 {
        sqlx::query_scalar("SELECT available FROM stock WHERE sku = $1")
            .bind(sku)
            .fetch_one(self.pool())
            .await
            .unwrap()
    }

    pub async fn payment_status(&self, order_id: &str) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM payments WHERE order_id = $1")
            .bind(db_id(order_id))
            .fetch_optional(self.pool())
            .await
            .unwrap()
    }

    /// Opens a graphql-transport-ws connection, authenticating with `token` in `connection_init`.
    pub async fn ws(&self, token: Option<&str>) -> Ws {
        self.ws_to(self.addr, token).await
    }

    /// Like [`TestApp::ws`], to the API instance at `addr`.
    pub async fn ws_to(&self, addr: std::net::SocketAddr, token: Option<&str>) -> Ws {
        let mut req = format!("ws://{addr}/graphql/ws").into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(req).await.expect("ws connect");
        let payload = match token {
            Some(t) => json!({ "authorization": format!("Bearer {t}") }),
            None => json!({}),
        };
        socket
            .send(Message::Text(json!({ "type": "connection_init", "payload": payload }).to_string().into()))
            .await
            .unwrap();
        Ws { socket, pong: true }
    }

    /// A graphql-transport-ws connection that has sent nothing yet, its receive buffer as small as
    /// the system allows when `small_buffer` (a client that reads slowly fills it soon).
    pub async fn ws_bare(&self, small_buffer: bool) -> Ws {
        let mut req = format!("ws://{}/graphql/ws", self.addr).into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
        let tcp = tokio::net::TcpSocket::new_v4().unwrap();
        if small_buffer {
            tcp.set_recv_buffer_size(4096).unwrap();
        }
        let stream = tcp.connect(self.addr).await.expect("tcp connect");
        let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
        let (socket, _) = tokio_tungstenite::client_async(req, stream).await.expect("ws connect");
        Ws { socket, pong: true }
    }

    /// Subscribes to an order's saga events and collects them until the stream completes or errors.
    pub async fn order_events(&self, user: &User, order_id: &str) -> Result<Vec<String>, Value> {
        let mut ws = self.ws(Some(&user.token)).await;
        ws.expect_ack().await;
        ws.subscribe(order_id).await;
        ws.collect().await
    }
}

pub struct Ws {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    /// Answer the server's pings with pongs, as graphql-ws clients do.
    pub pong: bool,
}

impl Ws {
    /// The next message of any subscription on this connection (the server's pings answered and
    /// skipped, unless `pong` is off); `None` once closed.
    pub async fn next_json(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(60), self.socket.next())
                .await
                .expect("ws message in time")?;
            match msg.ok()? {
                Message::Text(t) => {
                    let m: Value = serde_json::from_str(&t).unwrap();
                    if self.pong && m["type"] == "ping" {
                        let pong = json!({ "type": "pong" }).to_string();
                        self.socket.send(Message::Text(pong.into())).await.ok()?;
                        continue;
                    }
                    return Some(m);
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Sends text frames in one write (as a client that pipelines them does).
    pub async fn send_all(&mut self, texts: Vec<String>) {
        for t in texts {
            self.socket.feed(Message::Text(t.into())).await.unwrap();
        }
        self.socket.flush().await.unwrap();
    }

    /// Sends any text frame.
    pub async fn send_text(&mut self, text: String) {
        self.socket.send(Message::Text(text.into())).await.unwrap();
    }

    pub async fn expect_ack(&mut self) {
        let m = self.next_json().await.expect("connection_ack");
        assert_eq!(m["type"], "connection_ack", "{m}");
    }

    /// The first message after `connection_init`, or `None` when the server closed the connection.
    pub async fn init_result(&mut self) -> Option<Value> {
        self.next_json().await
    }

    /// The close code the server ends the connection with, skipping other messages.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(60), self.socket.next())
                .await
                .expect("ws message in time")?;
            if let Message::Close(frame) = msg.ok()? {
                return frame.map(|f| u16::from(f.code));
            }
        }
    }

    pub async fn subscribe(&mut self, order_id: &str) {
        let msg = json!({
            "id": "1",
            "type": "subscribe",
            "payload": {
                "query": "subscription($id: ID!) { orderEvents(orderId: $id) { sequence type detail } }",
                "variables": { "id": order_id }
            }
        });
        self.socket.send(Message::Text(msg.to_string().into())).await.unwrap();
    }

    /// Starts subscription `id` with any document.
    pub async fn start(&mut self, id: &str, query: &str, variables: Value) {
        let msg =
            json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } });
        self.socket.send(Message::Text(msg.to_string().into())).await.unwrap();
    }

    /// The next `next` payload (data or errors), or the `error` message's payload; `None` once closed.
    pub async fn next_payload(&mut self) -> Option<Value> {
        loop {
            let m = self.next_json().await?;
            match m["type"].as_str() {
                Some("next") => return Some(m["payload"].clone()),
                Some("error") => return Some(json!({ "errors": m["payload"] })),
                Some("complete") => return None,
                _ => continue,
            }
        }
    }

    /// Event types until `complete`; `Err` with the error payload if the subscription failed.
    pub async fn collect(&mut self) -> Result<Vec<String>, Value> {
        let mut events = Vec::new();
        let mut seq = 0;
        while let Some(m) = self.next_json().await {
            match m["type"].as_str() {
                Some("next") => {
                    if let Some(errors) = m["payload"].get("errors") {
                        return Err(errors.clone());
                    }
                    let e = &m["payload"]["data"]["orderEvents"];
                    seq += 1;
                    assert_eq!(e["sequence"], seq, "events arrive in order without gaps");
                    events.push(e["type"].as_str().unwrap().to_string());
                }
                Some("error") => return Err(m["payload"].clone()),
                Some("complete") => return Ok(events),
                _ => {}
            }
        }
        Ok(events)
    }
}

/// The `extensions.code` of the first error.
pub fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {body}"))
}

/// A browser check: `node tests/browser/<script> <args>` (headless Chromium through
/// playwright-core), talking to the test line by line over stdin and stdout. A failure panics with
/// the script's stderr.
pub struct BrowserCheck {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    out: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    stderr: tokio::process::ChildStderr,
    /// The screenshot the script is asked to save (its last argument).
    pub screenshot: std::path::PathBuf,
}

impl BrowserCheck {
    /// Starts `script` with `args` and, last, the path of screenshot `screenshot` under the target
    /// directory (removed first, so an old one cannot pass for a new one).
    pub fn start(script: &str, args: &[&str], screenshot: &str) -> BrowserCheck {
        use std::path::PathBuf;
        use std::process::Stdio;
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
        let target = if target.is_absolute() { target } else { root.join(target) };
        std::fs::create_dir_all(&target).unwrap();
        let dir = root.join("tests/browser");
        assert!(
            dir.join("node_modules/playwright-core").is_dir(),
            "playwright-core is not installed in {}: run scripts/services.sh browser",
            dir.display()
        );
        let screenshot = target.join(screenshot);
        let _ = std::fs::remove_file(&screenshot);
        let mut child = tokio::process::Command::new("node")
            .current_dir(&dir)
            .arg(script)
            .args(args)
            .arg(&screenshot)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (Node.js 20 is on the machine)");
        let stdin = child.stdin.take();
        let out = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
        let stderr = child.stderr.take().unwrap();
        BrowserCheck { child, stdin, out, stderr, screenshot }
    }

    /// The script's next line, which must start with `prefix`, within `secs` seconds.
    pub async fn expect(&mut self, prefix: &str, secs: u64) -> String {
        match tokio::time::timeout(Duration::from_secs(secs), self.out.next_line()).await {
            Ok(Ok(Some(line))) if line.starts_with(prefix) => line,
            other => self.fail(format!("expected {prefix} from {}: {other:?}", self.name())).await,
        }
    }

    /// Sends the script one line.
    pub async fn send(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Waits (at most `secs` seconds) for the script to end well, its last line `DONE`, and checks
    /// its screenshot is a real one.
    pub async fn finish(mut self, secs: u64) {
        drop(self.stdin.take());
        let mut lines = Vec::new();
        let out = &mut self.out;
        let child = &mut self.child;
        let finished = tokio::time::timeout(Duration::from_secs(secs), async {
            while let Ok(Some(l)) = out.next_line().await {
                lines.push(l);
            }
            child.wait().await
        })
        .await;
        match finished {
            Ok(Ok(status)) if status.success() => {}
            other => self.fail(format!("{} failed: {other:?}; stdout: {lines:?}", self.name())).await,
        }
        assert_eq!(lines.last().map(String::as_str), Some("DONE"), "{lines:?}");
        let png = std::fs::read(&self.screenshot).expect("screenshot saved");
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot: {} bytes", png.len());
    }

    fn name(&self) -> String {
        self.screenshot.file_stem().unwrap_or_default().to_string_lossy().to_string()
    }

    async fn fail(&mut self, what: String) -> ! {
        let mut err = String::new();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_string(&mut self.stderr, &mut err),
        )
        .await;
        panic!("{what}\n--- browser check stderr ---\n{err}");
    }
}

/// The database id (UUID) behind an order's or saga's global id.
pub fn db_id(global: &str) -> Uuid {
    let id = async_graphql::ID(global.to_string());
    ecommerce_saga::graphql::node::order_uuid(&id)
        .or_else(|| ecommerce_saga::graphql::node::saga_uuid(&id))
        .unwrap_or_else(|| panic!("not an id: {global}"))
}
