//! The API binary, and the operational commands (migrate, seed, rotate-keys, print-schema).
//! `api all` runs every role in this one process.

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ecommerce_checkout::roles::{self, Services};
use ecommerce_platform::config::{redact_url, Config, ExposeSecret};
use ecommerce_platform::metrics::ConsumerStats;
use ecommerce_platform::postgres;
use ecommerce_saga::app;
use ecommerce_storefront::mongo::Mongo;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "api", version, about = "ecommerce-saga GraphQL API and operational commands")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the GraphQL API (default).
    Serve,
    /// Run the API, the orchestrator and the workers in this process (over in-process queues
    /// unless BROKER names a broker).
    All,
    /// Create the database if needed and apply migrations.
    Migrate,
    /// Load the demo catalog and its stock levels (idempotent).
    Seed {
        /// Set every product's stock to this instead of the demo levels (for load tests).
        #[arg(long)]
        stock: Option<i32>,
    },
    /// Add a new signing key; the old one keeps verifying until its tokens expire.
    RotateKeys,
    /// Create an operator account (password read from standard input, one line). An address that
    /// is already an operator's is left as it is. An existing account that is not an operator's
    /// is refused: whoever registered the address first would become an operator with their own
    /// password. `--promote-existing` grants it the role all the same, after naming the account.
    CreateOperator {
        #[arg(long)]
        email: String,
        /// Give the operator role to the account that already has this address (its password
        /// stays its owner's).
        #[arg(long)]
        promote_existing: bool,
    },
    /// Give an account a role (`operator`: the saga monitor at /monitor and operator queries).
    /// It shows in tokens issued from then on: sign in again.
    GrantRole { email: String, role: String },
    /// Take a role away; it stops counting on the account's next request.
    RevokeRole { email: String, role: String },
    /// Print the GraphQL schema (SDL).
    PrintSchema,
    /// Read the configuration from the environment and exit: 0 when every role would start with
    /// it, else the error naming the setting (what `scripts/check-k8s.py` runs on the manifests).
    CheckConfig,
    /// Dead letters: messages a consumer gave up on (failed MAX_DELIVERIES times, or could not
    /// read). Fix the cause first, then replay them; or drain them to a file.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
    },
}

#[derive(Subcommand)]
enum DeadLetterAction {
    /// Publish every dead letter again to the topic it came from (its consumer handles it once;
    /// copies are dropped by the inbox). Prints a JSON line per message; unreadable ones stay.
    Replay {
        /// Replay the lines a `drain` wrote to this file instead of the dead-letter topic.
        #[arg(long)]
        from: Option<std::path::PathBuf>,
        #[command(flatten)]
        take: TakeArgs,
    },
    /// Move every dead letter out of the dead-letter topic into a file of JSON lines (standard
    /// output without --to): to inspect, keep, or `replay --from` later.
    Drain {
        #[arg(long)]
        to: Option<std::path::PathBuf>,
        #[command(flatten)]
        take: TakeArgs,
    },
}

#[derive(clap::Args)]
struct TakeArgs {
    /// Stop once no dead letter arrived for this many milliseconds.
    #[arg(long, default_value = "3000")]
    idle_ms: u64,
    /// Stop after this many.
    #[arg(long)]
    limit: Option<usize>,
}

impl TakeArgs {
    fn take(&self) -> ecommerce_platform::dead_letters::Take {
        ecommerce_platform::dead_letters::Take {
            idle: std::time::Duration::from_millis(self.idle_ms),
            limit: self.limit,
        }
    }
}

/// Runs `api dead-letters …`: needs the broker only.
async fn dead_letters(config: &Config, action: DeadLetterAction) -> anyhow::Result<()> {
    use ecommerce_platform::dead_letters as dl;
    config.require_shared_broker("`api dead-letters`")?;
    let transport = ecommerce_platform::broker::connect(config).await.context("connecting to the broker")?;
    let stdout = std::io::stdout();
    let summary = match action {
        DeadLetterAction::Replay { from: Some(path), .. } => {
            let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            dl::replay_from(transport.as_ref(), &mut std::io::BufReader::new(file), &mut stdout.lock())
                .await?
        }
        DeadLetterAction::Replay { from: None, take } => {
            dl::replay(transport.as_ref(), take.take(), &mut stdout.lock()).await?
        }
        DeadLetterAction::Drain { to: Some(path), take } => {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            dl::drain(transport.as_ref(), take.take(), &mut file).await?
        }
        DeadLetterAction::Drain { to: None, take } => {
            dl::drain(transport.as_ref(), take.take(), &mut stdout.lock()).await?
        }
    };
    tracing::info!(
        replayed = summary.replayed,
        drained = summary.drained,
        kept = summary.kept,
        "dead letters done"
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = Config::from_env()?;
    // Spans are exported by the long-running roles; short commands only log.
    let service = match cli.command {
        None | Some(Command::Serve) => Some("api"),
        Some(Command::All) => Some("ecommerce-saga"),
        _ => None,
    };
    let telemetry = ecommerce_platform::telemetry::init(
        service.unwrap_or("api"),
        service.and(config.telemetry.otlp_endpoint.as_deref()),
    )?;
    // All roles in one process: unless a broker is named, they talk through in-process queues.
    if matches!(cli.command, Some(Command::All)) && std::env::var("BROKER").map_or(true, |b| b.is_empty()) {
        config.use_in_process_broker()?;
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::PrintSchema => print!("{}", ecommerce_saga::graphql::sdl()),
        Command::CheckConfig => println!("configuration ok ({:?})", config.app_env),
        Command::DeadLetters { action } => dead_letters(&config, action).await?,
        Command::Migrate => {
            postgres::migrate(&config).await.with_context(|| {
                format!("migrating {}", postgres::describe(config.postgres.url.expose_secret()))
            })?;
            tracing::info!("migrations applied");
        }
        Command::Seed { stock } => {
            // PostgreSQL (stock) and MongoDB (catalog) only: a short command opens no broker
            // connection that would be cut when the runtime stops.
            let pool = postgres::connect(&config).await.with_context(|| {
                format!("cannot reach {}", postgres::describe(config.postgres.url.expose_secret()))
            })?;
            let mongo = Mongo::connect(&config).await.with_context(|| {
                format!("cannot reach MongoDB at {}", redact_url(config.mongo.url.expose_secret()))
            })?;
            let mut products = ecommerce_storefront::catalog::seed::demo_products();
            if let Some(level) = stock {
                products.iter_mut().for_each(|(_, s)| *s = level);
            }
            ecommerce_storefront::catalog::seed::seed(&pool, &mongo, &products).await?;
            tracing::info!(products = products.len(), "demo catalog seeded");
        }
        Command::CreateOperator { email, promote_existing } => {
            use ecommerce_saga::auth::service;
            let pool = postgres::connect(&config).await.with_context(|| {
                format!("cannot reach {}", postgres::describe(config.postgres.url.expose_secret()))
            })?;
            match service::account_by_email(&pool, &email).await? {
                None => {
                    let mut password = String::new();
                    std::io::stdin()
                        .read_line(&mut password)
                        .context("reading the password from standard input")?;
                    // Registered meanwhile: `Conflict`, and nothing is granted.
                    service::create_account(&pool, &email, password.trim_end_matches(['\r', '\n'])).await?;
                    set_role(&config, &email, "operator", true).await?;
                    println!("created {email}");
                }
                Some(a) if a.roles.iter().any(|r| r == "operator") => {
                    println!("{email} is an operator already (id {}); password unchanged", a.id);
                }
                Some(a) if promote_existing => {
                    println!(
                        "promoting the existing account {} (id {}, registered {}, roles [{}]); its password stays its owner's",
                        a.email,
                        a.id,
                        a.created_at.to_rfc3339(),
                        a.roles.join(", ")
                    );
                    set_role(&config, &email, "operator", true).await?;
                }
                Some(a) => anyhow::bail!(
                    "{} already has an account (id {}, registered {}) that this command did not create, \
                     so it was not made an operator: whoever registered the address would become one with \
                     their own password. If the account is yours, run again with --promote-existing",
                    a.email,
                    a.id,
                    a.created_at.to_rfc3339()
                ),
            }
        }
        Command::GrantRole { email, role } => set_role(&config, &email, &role, true).await?,
        Command::RevokeRole { email, role } => set_role(&config, &email, &role, false).await?,
        Command::RotateKeys => {
            let pool = postgres::connect(&config).await.with_context(|| {
                format!("cannot reach {}", postgres::describe(config.postgres.url.expose_secret()))
            })?;
            let kid = ecommerce_saga::auth::keys::rotate(&pool, config.api.auth.access_token_ttl).await?;
            tracing::info!(%kid, "new signing key added");
            println!("{kid}");
        }
        Command::Serve => {
            config.require_shared_broker("`api serve`")?;
            let mongo = open_mongo(&config).await?;
            let s = Services::connect(config).await?;
            let shutdown = CancellationToken::new();
            roles::cancel_on_signal(shutdown.clone());
            let listener = tokio::net::TcpListener::bind(s.config.api.addr).await?;
            let admin = bind_admin(&s.config).await?;
            s.announce("api", Some(&mongo.describe().await)).await;
            announce(&listener, "api")?;
            app::run_api(s, mongo, listener, admin, shutdown).await?;
        }
        Command::All => {
            let mongo = open_mongo(&config).await?;
            let s = Services::connect(config).await?;
            let shutdown = CancellationToken::new();
            roles::cancel_on_signal(shutdown.clone());
            let listener = tokio::net::TcpListener::bind(s.config.api.addr).await?;
            let admin = bind_admin(&s.config).await?;
            s.announce("api + orchestrator + workers", Some(&mongo.describe().await)).await;
            announce(&listener, "api + orchestrator + workers")?;
            let orchestrator = tokio::spawn(roles::run_orchestrator(
                s.clone(),
                Arc::new(ConsumerStats::default()),
                shutdown.clone(),
            ));
            let workers = tokio::spawn(ecommerce_storefront::roles::run_workers(
                s.clone(),
                mongo.clone(),
                ecommerce_checkout::payment::configured_gateway(&s.config)?,
                Arc::new(ConsumerStats::default()),
                shutdown.clone(),
            ));
            app::run_api(s, mongo, listener, admin, shutdown).await?;
            let _ = tokio::join!(orchestrator, workers);
        }
    }
    telemetry.shutdown().await;
    Ok(())
}

async fn open_mongo(config: &Config) -> anyhow::Result<Mongo> {
    Mongo::open(config)
        .await
        .with_context(|| format!("cannot reach MongoDB at {}", redact_url(config.mongo.url.expose_secret())))
}

/// The listener of the API's admin routes (`/metrics`, `/readyz`), unless `API_ADMIN_ADDR=off`.
async fn bind_admin(config: &Config) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = config.api.admin_addr else { return Ok(None) };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve the admin routes on {addr} (API_ADMIN_ADDR)"))?;
    let bound = listener.local_addr()?;
    tracing::info!(%bound, "serving /metrics and /readyz");
    eprintln!("Metrics and readiness: http://{bound}/metrics, http://{bound}/readyz");
    Ok(Some(listener))
}

fn announce(listener: &tokio::net::TcpListener, roles: &str) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, roles, "listening");
    eprintln!("GraphQL playground: http://{addr}/graphql   (subscriptions: ws://{addr}/graphql/ws)");
    Ok(())
}

async fn set_role(config: &Config, email: &str, role: &str, grant: bool) -> anyhow::Result<()> {
    let role = ecommerce_saga::auth::Role::parse(role)
        .with_context(|| format!("unknown role {role:?}; known: operator"))?;
    let pool = postgres::connect(config).await.with_context(|| {
        format!("cannot reach {}", postgres::describe(config.postgres.url.expose_secret()))
    })?;
    ecommerce_saga::auth::service::set_role(&pool, email, role, grant).await?;
    println!("{} {} {email}", if grant { "granted" } else { "revoked" }, role.as_str());
    Ok(())
}
