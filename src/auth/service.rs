//! Register, log in, refresh, log out, and authenticate a request.
//!
//! A login starts a session. The session hands out a short-lived access token (a JWT carrying the
//! session id as `sid`) and an opaque refresh token, stored only as its SHA-256. Each refresh spends
//! the presented token and returns a new pair; presenting a spent token again means it was copied,
//! so the whole session is revoked, and with it every access token that carries its `sid`. Except
//! for two tabs refreshing at the same moment: within `refresh_reuse_grace` of the first use the
//! spent token gets the same new refresh token again (each session's tokens follow from one
//! another by an HMAC under the session's secret), and a fresh access token, once: a third
//! presentation, or one after the new token was used, ends the session.

use std::net::IpAddr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::{password, rate_limit, AuthUser, KeyRing, Role, TokenError};
use ecommerce_core::domain::{Email, Password, PasswordLength};
use ecommerce_core::refusal::{Refusal, UserErrorCode};
use ecommerce_platform::config::RateLimits;
use ecommerce_platform::error::{AppError, AppResult};

const REFUSED: AppError = AppError::InvalidCredentials("invalid email or password");
const BAD_REFRESH: AppError = AppError::InvalidCredentials("refresh token is invalid or has expired");
/// Refresh tokens are `rt_` and 43 base64url characters (32 random bytes).
const REFRESH_PREFIX: &str = "rt_";

pub struct Session {
    pub user: AuthUser,
    pub access_token: String,
    pub expires_at: u64,
    pub refresh_token: String,
    pub refresh_expires_at: chrono::DateTime<chrono::Utc>,
}

/// Accounts and sessions, shared by every request.
pub struct AuthService {
    pub pool: PgPool,
    pub keys: Arc<KeyRing>,
    pub refresh_ttl: std::time::Duration,
    pub refresh_reuse_grace: std::time::Duration,
    pub limits: RateLimits,
}

fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A random refresh token (a session without a secret).
fn new_refresh_token() -> String {
    format!("{REFRESH_PREFIX}{}", URL_SAFE_NO_PAD.encode(random_bytes()))
}

/// The token that follows `token` in a session with `secret`.
fn successor(secret: &[u8], token: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(token.as_bytes());
    format!("{REFRESH_PREFIX}{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

impl AuthService {
    /// Signs an access token for `user` in `session`. Never called while a transaction is open:
    /// signing may read the key set from the pool, and a transaction waiting on a second
    /// connection from a small pool can starve it.
    async fn sign(&self, user: &AuthUser, session: Uuid) -> AppResult<(String, u64)> {
        self.keys
            .issue(user.id, &user.email, &user.roles, session)
            .await
            .map_err(|e| AppError::Internal(e.to_string()))
    }

    /// Stores `refresh_token` for `session`; returns it and its expiry.
    async fn store_refresh_token(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        session: Uuid,
        refresh_token: String,
    ) -> AppResult<(String, chrono::DateTime<chrono::Utc>)> {
        let hash = digest(&refresh_token);
        let expires_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
            "INSERT INTO refresh_tokens (token_hash, session_id, expires_at)
             VALUES ($1, $2, now() + $3 * interval '1 second') RETURNING expires_at",
        )
        .bind(hash)
        .bind(session)
        .bind(self.refresh_ttl.as_secs() as f64)
        .fetch_one(&mut **tx)
        .await?;
        Ok((refresh_token, expires_at))
    }

    async fn start_session(&self, user: AuthUser) -> AppResult<Session> {
        let session = Uuid::now_v7();
        let (access_token, expires_at) = self.sign(&user, session).await?;
        let mut tx = self.pool.begin().await?;
        let secret = random_bytes();
        sqlx::query("INSERT INTO sessions (id, user_id, refresh_secret) VALUES ($1, $2, $3)")
            .bind(session)
            .bind(user.id)
            .bind(&secret[..])
            .execute(&mut *tx)
            .await?;
        // The first token is random: the secret alone derives no token of the session.
        let first = new_refresh_token();
        let (refresh_token, refresh_expires_at) = self.store_refresh_token(&mut tx, session, first).await?;
        tx.commit().await?;
        Ok(Session { user, access_token, expires_at, refresh_token, refresh_expires_at })
    }

    pub async fn register(&self, client: IpAddr, email: &str, password: &str) -> AppResult<Session> {
        let l = self.limits;
        rate_limit::hit(&self.pool, &format!("register:addr:{client}"), l.register_per_address, l.window)
            .await?;
        let (id, email) = create_account(&self.pool, email, password).await?;
        self.start_session(AuthUser { id, email, roles: Vec::new() }).await
    }

    /// Unknown e-mail and wrong password answer alike, after the same argon2 work, and count
    /// against the same per-account budget, so neither the answer, its timing nor the rate limit
    /// tells whether an account exists.
    pub async fn login(&self, client: IpAddr, email: &str, password: &str) -> AppResult<Session> {
        let l = self.limits;
        rate_limit::hit(&self.pool, &format!("login:addr:{client}"), l.login_per_address, l.window).await?;
        let normalized = Email::parse(email).map(|e| e.as_str().to_string());
        let account_key = account_key(normalized.as_deref().unwrap_or(&email.trim().to_lowercase()));
        rate_limit::hit(&self.pool, &account_key, l.login_per_account, l.window).await?;
        let row = match &normalized {
            Ok(e) => {
                sqlx::query("SELECT id, password_hash, roles FROM users WHERE email = $1")
                    .bind(e)
                    .fetch_optional(&self.pool)
                    .await?
            }
            Err(_) => None,
        };
        let (id, hash, roles) = match row {
            Some(r) => (
                Some(r.get::<Uuid, _>("id")),
                r.get::<String, _>("password_hash"),
                r.get::<Vec<String>, _>("roles"),
            ),
            None => (None, password::dummy_hash().to_string(), Vec::new()),
        };
        let ok = password::verify(password.to_string(), hash).await?;
        match (id, ok, normalized) {
            (Some(id), true, Ok(email)) => {
                let roles = roles.iter().filter_map(|r| Role::parse(r)).collect();
                self.start_session(AuthUser { id, email, roles }).await
            }
            _ => Err(REFUSED),
        }
    }

    /// Spends `refresh_token` and returns a new pair. A spent token presented again revokes its
    /// session (the reuse is the sign of a stolen token; the legitimate holder signs in again),
    /// unless within `refresh_reuse_grace` of its first use: then it gets the same new refresh
    /// token as the first time, and a fresh access token, once, while that new token is unused.
    pub async fn refresh(&self, refresh_token: &str) -> AppResult<Session> {
        if !refresh_token.starts_with(REFRESH_PREFIX) || refresh_token.len() > 64 {
            return Err(BAD_REFRESH);
        }
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT t.session_id, t.used_at IS NOT NULL AS spent, t.expires_at <= now() AS expired,
                    coalesce(t.used_at > now() - make_interval(secs => $2), false) AS in_grace,
                    s.revoked_at IS NOT NULL AS revoked, s.refresh_secret, u.id AS user_id, u.email, u.roles
             FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id JOIN users u ON u.id = s.user_id
             WHERE t.token_hash = $1
             FOR UPDATE OF t",
        )
        .bind(digest(refresh_token))
        .bind(self.refresh_reuse_grace.as_secs_f64())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(BAD_REFRESH);
        };
        let session: Uuid = row.get("session_id");
        if row.get::<bool, _>("revoked") || row.get::<bool, _>("expired") {
            return Err(BAD_REFRESH);
        }
        let secret: Option<Vec<u8>> = row.get("refresh_secret");
        let roles = row.get::<Vec<String>, _>("roles").iter().filter_map(|r| Role::parse(r)).collect();
        let user = AuthUser { id: row.get("user_id"), email: row.get("email"), roles };
        if row.get::<bool, _>("spent") {
            if let (true, Some(secret)) = (row.get::<bool, _>("in_grace"), &secret) {
                // Another tab refreshed with this token a moment ago: the same successor, once,
                // and only while nobody has used it yet. A third presentation, or one after the
                // successor rotated, is a copy of the token: the session ends below.
                let next = successor(secret, refresh_token);
                let expires: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
                    "WITH once AS (
                         UPDATE refresh_tokens SET grace_used_at = now()
                          WHERE token_hash = $3 AND grace_used_at IS NULL
                      RETURNING 1)
                     SELECT n.expires_at FROM refresh_tokens n, once
                      WHERE n.token_hash = $1 AND n.session_id = $2 AND n.used_at IS NULL",
                )
                .bind(digest(&next))
                .bind(session)
                .bind(digest(refresh_token))
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(refresh_expires_at) = expires {
                    tx.commit().await?;
                    let (access_token, expires_at) = self.sign(&user, session).await?;
                    return Ok(Session {
                        user,
                        access_token,
                        expires_at,
                        refresh_token: next,
                        refresh_expires_at,
                    });
                }
            }
            revoke(&mut tx, session, "refresh token reused").await?;
            tx.commit().await?;
            tracing::warn!(session_id = %session, "spent refresh token presented again; session revoked");
            return Err(BAD_REFRESH);
        }
        sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1")
            .bind(digest(refresh_token))
            .execute(&mut *tx)
            .await?;
        let next = match &secret {
            Some(secret) => successor(secret, refresh_token),
            None => new_refresh_token(),
        };
        let (refresh_token, refresh_expires_at) = self.store_refresh_token(&mut tx, session, next).await?;
        tx.commit().await?;
        // Signed after the commit (see `sign`). Should signing fail now, the client signs in again.
        let (access_token, expires_at) = self.sign(&user, session).await?;
        Ok(Session { user, access_token, expires_at, refresh_token, refresh_expires_at })
    }

    /// Ends the session: its refresh tokens and the access tokens it issued stop working.
    pub async fn logout(&self, session: Uuid) -> AppResult<()> {
        let mut tx = self.pool.begin().await?;
        revoke(&mut tx, session, "logout").await?;
        tx.commit().await?;
        Ok(())
    }

    /// For each of `sessions` that exists: whether it is still open, and whether its account holds
    /// the operator role now. One query, for every open subscription connection of a process.
    pub async fn session_states(&self, sessions: &[Uuid]) -> Result<Vec<(Uuid, bool, bool)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT s.id, s.revoked_at IS NULL, $2 = ANY(u.roles)
               FROM sessions s JOIN users u ON u.id = s.user_id
              WHERE s.id = ANY($1)",
        )
        .bind(sessions)
        .bind(Role::Operator.as_str())
        .fetch_all(&self.pool)
        .await
    }

    /// Verifies an access token and that its session is still open. A role counts only if the
    /// account still holds it.
    pub async fn authenticate(&self, token: &str) -> Result<(AuthUser, Uuid), TokenError> {
        let claims = self.keys.verify(token).await?;
        let row = sqlx::query(
            "SELECT s.revoked_at IS NULL AS open, u.roles
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.id = $1 AND s.user_id = $2",
        )
        .bind(claims.sid)
        .bind(claims.sub)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "session lookup failed");
            TokenError::Invalid("session could not be checked".into())
        })?;
        match row {
            Some(r) if r.get::<bool, _>("open") => {
                let roles = Role::granted(&claims.roles, &r.get::<Vec<String>, _>("roles"));
                Ok((AuthUser { id: claims.sub, email: claims.email, roles }, claims.sid))
            }
            _ => Err(TokenError::Revoked),
        }
    }
}

/// Deletes what no session needs any more, `batch` rows per statement: refresh tokens that expired,
/// or whose session was revoked, more than `keep` ago; then sessions left without tokens that
/// ended (revoked, or every token expired) more than `keep` ago. Returns (tokens, sessions).
/// A token kept until then is still recognised: presented, it is refused as expired or revoked.
pub async fn prune_sessions(
    pool: &PgPool,
    keep: std::time::Duration,
    batch: i64,
) -> Result<(u64, u64), sqlx::Error> {
    use ecommerce_platform::postgres::delete_in_batches;
    let secs = keep.as_secs_f64();
    let tokens = delete_in_batches(batch, || async {
        let deleted = sqlx::query(
            "DELETE FROM refresh_tokens WHERE ctid = ANY(ARRAY(
                 SELECT t.ctid FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
                  WHERE t.expires_at < now() - make_interval(secs => $1)
                     OR s.revoked_at < now() - make_interval(secs => $1)
                  LIMIT $2))",
        )
        .bind(secs)
        .bind(batch)
        .execute(pool)
        .await?;
        Ok(deleted.rows_affected())
    })
    .await?;
    let sessions = delete_in_batches(batch, || async {
        let deleted = sqlx::query(
            "DELETE FROM sessions WHERE ctid = ANY(ARRAY(
                 SELECT s.ctid FROM sessions s
                  WHERE s.created_at < now() - make_interval(secs => $1)
                    AND (s.revoked_at IS NULL OR s.revoked_at < now() - make_interval(secs => $1))
                    AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.session_id = s.id)
                  LIMIT $2))",
        )
        .bind(secs)
        .bind(batch)
        .execute(pool)
        .await?;
        Ok(deleted.rows_affected())
    })
    .await?;
    Ok((tokens, sessions))
}

/// Creates an account (no session); returns its id and normalized e-mail. Refuses (`INVALID_EMAIL`,
/// `PASSWORD_TOO_SHORT`, `PASSWORD_TOO_LONG`, `EMAIL_TAKEN`) what the person signing up can fix.
pub async fn create_account(pool: &PgPool, email: &str, password: &str) -> AppResult<(Uuid, String)> {
    let email = Email::parse(email).map_err(Refusal::invalid(UserErrorCode::InvalidEmail))?;
    let password = Password::check(password).map_err(|bound| match bound {
        PasswordLength::TooShort => Refusal::new(
            UserErrorCode::PasswordTooShort,
            format!("The password needs at least {} characters.", Password::MIN),
        ),
        PasswordLength::TooLong => Refusal::new(
            UserErrorCode::PasswordTooLong,
            format!("The password can have at most {} characters.", Password::MAX),
        ),
    })?;
    let hash = password::hash(password.expose().to_string()).await?;
    let id = Uuid::now_v7();
    let inserted = sqlx::query("INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(email.as_str())
        .bind(hash)
        .execute(pool)
        .await;
    match inserted {
        Err(sqlx::Error::Database(db)) if db.constraint() == Some("users_email_key") => {
            Err(AppError::refused(
                UserErrorCode::EmailTaken,
                "An account with this e-mail address exists: sign in instead.",
            ))
        }
        other => other.map(|_| (id, email.as_str().to_string())).map_err(AppError::from),
    }
}

/// Who holds an account: what an operator command shows before it changes one.
#[derive(Debug, Clone)]
pub struct AccountSummary {
    pub id: Uuid,
    pub email: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub roles: Vec<String>,
}

/// The account with this e-mail address, if there is one.
pub async fn account_by_email(pool: &PgPool, email: &str) -> AppResult<Option<AccountSummary>> {
    let email = Email::parse(email)?;
    let row: Option<(Uuid, String, chrono::DateTime<chrono::Utc>, Vec<String>)> =
        sqlx::query_as("SELECT id, email, created_at, roles FROM users WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(id, email, created_at, roles)| AccountSummary { id, email, created_at, roles }))
}

/// Grants (`grant = true`) or removes a role; `NotFound` when no account has this e-mail.
/// A grant shows in tokens issued afterwards (sign in again); a removal counts at once.
pub async fn set_role(pool: &PgPool, email: &str, role: Role, grant: bool) -> AppResult<()> {
    let email = Email::parse(email)?;
    let sql = if grant {
        "UPDATE users SET roles = array_append(roles, $2) WHERE email = $1 AND NOT ($2 = ANY(roles))"
    } else {
        "UPDATE users SET roles = array_remove(roles, $2) WHERE email = $1"
    };
    sqlx::query(sql).bind(email.as_str()).bind(role.as_str()).execute(pool).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE email = $1)")
        .bind(email.as_str())
        .fetch_one(pool)
        .await?;
    if exists {
        Ok(())
    } else {
        Err(AppError::NotFound("account"))
    }
}

/// The per-account login counter's key: a digest of the address typed, so that neither the
/// `rate_limits` table nor the "rate limit reached" log line holds what somebody typed at login.
fn account_key(email: &str) -> String {
    let digest = Sha256::digest(format!("login-account:{email}").as_bytes());
    format!("login:acct:{}", &URL_SAFE_NO_PAD.encode(digest)[..22])
}

async fn revoke(tx: &mut Transaction<'_, Postgres>, session: Uuid, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $2 WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(session)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_random_prefixed_and_stored_only_as_a_digest() {
        let (a, b) = (new_refresh_token(), new_refresh_token());
        let (ha, hb) = (digest(&a), digest(&b));
        assert_ne!(a, b);
        assert!(a.starts_with(REFRESH_PREFIX) && a.len() == 3 + 43, "{a}");
        assert_eq!(ha.len(), 32);
        assert_ne!(ha, hb);
        assert!(!ha.windows(8).any(|w| a.as_bytes().windows(8).any(|x| x == w)), "digest, not the token");
    }

    #[test]
    fn a_sessions_tokens_follow_from_one_another_under_its_secret_only() {
        let (secret, other) = (random_bytes(), random_bytes());
        let first = new_refresh_token();
        let next = successor(&secret, &first);
        assert_eq!(next, successor(&secret, &first), "the same token has the same successor");
        assert!(next.starts_with(REFRESH_PREFIX) && next.len() == 3 + 43, "{next}");
        assert_ne!(next, first);
        assert_ne!(next, successor(&other, &first), "another session's secret gives another token");
        assert_ne!(successor(&secret, &next), next);
    }
}
