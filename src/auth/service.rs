//! Register and log in.

use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{password, AuthUser, KeyRing};
use crate::domain::{Email, Password};
use crate::error::{AppError, AppResult};

pub struct Session {
    pub user: AuthUser,
    pub access_token: String,
    pub expires_at: u64,
}

async fn session(keys: &KeyRing, user: AuthUser) -> AppResult<Session> {
    let (access_token, expires_at) =
        keys.issue(user.id, &user.email).await.map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(Session { user, access_token, expires_at })
}

pub async fn register(pool: &PgPool, keys: &KeyRing, email: &str, password: &str) -> AppResult<Session> {
    let email = Email::parse(email)?;
    let password = Password::parse(password)?;
    let hash = password::hash(password.expose().to_string()).await?;
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(email.as_str())
        .bind(hash)
        .execute(pool)
        .await
        .map_err(|e| {
            AppError::from_unique(e, "users_email_key", "an account with this email already exists")
        })?;
    session(keys, AuthUser { id, email: email.as_str().to_string() }).await
}

pub async fn login(pool: &PgPool, keys: &KeyRing, email: &str, password: &str) -> AppResult<Session> {
    const REFUSED: AppError = AppError::InvalidCredentials("invalid email or password");
    let Ok(email) = Email::parse(email) else {
        return Err(REFUSED);
    };
    let row = sqlx::query("SELECT id, password_hash FROM users WHERE email = $1")
        .bind(email.as_str())
        .fetch_optional(pool)
        .await?;
    let (id, hash) = match row {
        Some(r) => (Some(r.get::<Uuid, _>("id")), r.get::<String, _>("password_hash")),
        None => (None, password::dummy_hash().to_string()),
    };
    let ok = password::verify(password.to_string(), hash).await?;
    match (id, ok) {
        (Some(id), true) => session(keys, AuthUser { id, email: email.as_str().to_string() }).await,
        _ => Err(REFUSED),
    }
}
