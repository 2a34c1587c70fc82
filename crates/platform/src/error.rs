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
    /// Whether the failure is a store or the broker being out of reach (refused or cut
    /// connections, a pool that could not connect in time, a server shutting down), as opposed
    /// to the message or the handler: such a failure says nothing about the message, so it must
    /// not count towards dead-lettering it.
    pub fn is_unavailable(&self) -> bool {
        match self {
            AppError::Database(e) => database_unavailable(e),
            #[cfg(feature = "mongo")]
            AppError::Mongo(e) => {
                use mongodb::error::ErrorKind;
                matches!(
                    *e.kind,
                    ErrorKind::Io(_)
                        | ErrorKind::ServerSelection { .. }
                        | ErrorKind::ConnectionPoolCleared { .. }
                )
            }
            AppError::Broker(_) => true,
            _ => false,
        }
    }
}

fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // 08: connection exceptions; 57P01-03: the server is shutting down or starting;
            // 53300: too many connections; and a database closed to connections (55000).
            code.starts_with("08")
                || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
                || (code == "55000" && db.message().contains("not currently accepting connections"))
        }
        _ => false,
    }
}

impl AppError {
    pub fn bad_input(msg: impl Into<String>) -> Self {
        AppError::BadInput(msg.into())
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
