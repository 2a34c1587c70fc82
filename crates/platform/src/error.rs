//! The one error type services return. The GraphQL edge maps each variant to one `extensions.code`
//! (see `graphql::error`); internal details are logged there, never sent to clients.

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("authentication required")]
    Unauthenticated,
    #[error("{0}")]
    InvalidCredentials(&'static str),
    /// Authenticated, but the account lacks what the field needs (e.g. "the operator role is required").
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    BadInput(String),
    /// Something the buyer can fix, with its code: cart and order mutations return it as a
    /// `userErrors` entry.
    #[error(transparent)]
    Refused(#[from] ecommerce_core::refusal::Refusal),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("too many attempts; try again in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[cfg(feature = "mongo")]
    #[error("document store error: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("broker error: {0}")]
    Broker(#[from] crate::broker::BrokerError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn bad_input(msg: impl Into<String>) -> Self {
        AppError::BadInput(msg.into())
    }

    /// Maps a unique-constraint violation to a client error by the constraint's name.
    pub fn from_unique(e: sqlx::Error, constraint: &str, msg: &str) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.constraint() == Some(constraint) {
                return AppError::Conflict(msg.to_string());
            }
        }
        AppError::Database(e)
    }
}

impl From<ecommerce_core::domain::ValidationError> for AppError {
    fn from(e: ecommerce_core::domain::ValidationError) -> Self {
        AppError::BadInput(e.to_string())
    }
}

impl AppError {
    /// A refusal with this code and message.
    pub fn refused(code: ecommerce_core::refusal::UserErrorCode, msg: impl Into<String>) -> Self {
        AppError::Refused(ecommerce_core::refusal::Refusal::new(code, msg))
    }
}

pub type AppResult<T> = Result<T, AppError>;
