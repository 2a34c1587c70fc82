//! The one place errors become GraphQL errors. Every error carries `extensions.code`; internal
//! details go to the log (with the request's span), never to the client.

use async_graphql::{Error, ErrorExtensions, ServerError};

use crate::error::AppError;

pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
pub const FORBIDDEN: &str = "FORBIDDEN";
pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
pub const NOT_FOUND: &str = "NOT_FOUND";
pub const CONFLICT: &str = "CONFLICT";
pub const INTERNAL: &str = "INTERNAL";
pub const TOO_MANY_REQUESTS: &str = "TOO_MANY_REQUESTS";

pub fn code_of(e: &AppError) -> &'static str {
    match e {
        AppError::Unauthenticated | AppError::InvalidCredentials(_) => UNAUTHENTICATED,
        AppError::Forbidden(_) => FORBIDDEN,
        AppError::BadInput(_) => BAD_USER_INPUT,
        AppError::NotFound(_) => NOT_FOUND,
        AppError::Conflict(_) => CONFLICT,
        AppError::TooManyRequests { .. } => TOO_MANY_REQUESTS,
        AppError::Database(_) | AppError::Mongo(_) | AppError::Broker(_) | AppError::Internal(_) => INTERNAL,
    }
}

/// Maps a service error to a GraphQL error.
pub fn gql(e: AppError) -> Error {
    let code = code_of(&e);
    let message = if code == INTERNAL {
        tracing::error!(error = %e, "internal error");
        "internal error".to_string()
    } else {
        e.to_string()
    };
    let retry_after = match e {
        AppError::TooManyRequests { retry_after_secs } => Some(retry_after_secs),
        _ => None,
    };
    Error::new(message).extend_with(|_, ext| {
        ext.set("code", code);
        if let Some(secs) = retry_after {
            ext.set("retryAfterSeconds", secs);
        }
    })
}

/// Errors raised by the GraphQL engine itself (parse, validation, limits, variable coercion) are the
/// client's: give them `BAD_USER_INPUT` unless they already carry a code.
pub fn ensure_codes(errors: &mut [ServerError]) {
    for e in errors {
        let has_code = e.extensions.as_ref().is_some_and(|x| x.get("code").is_some());
        if !has_code {
            e.extensions.get_or_insert_with(Default::default).set("code", BAD_USER_INPUT);
        }
    }
}
