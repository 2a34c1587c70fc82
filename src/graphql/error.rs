//! The one place errors become GraphQL errors. Every error carries `extensions.code`; internal
//! details go to the log (with the request's span), never to the client.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextRequest, NextSubscribe};
use async_graphql::{Response, ServerError};
use futures::stream::BoxStream;
use futures::StreamExt;

use ecommerce_core::refusal::UserErrorCode;
use ecommerce_platform::error::AppError;

pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
pub const FORBIDDEN: &str = "FORBIDDEN";
pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
pub const NOT_FOUND: &str = "NOT_FOUND";
pub const CONFLICT: &str = "CONFLICT";
pub const INTERNAL: &str = "INTERNAL";
pub const TOO_MANY_REQUESTS: &str = "TOO_MANY_REQUESTS";
/// Automatic persisted queries: the hash is unknown here, send the document with it.
pub const PERSISTED_QUERY_NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";

pub fn code_of(e: &AppError) -> &'static str {
    match e {
        AppError::Unauthenticated | AppError::InvalidCredentials(_) => UNAUTHENTICATED,
        AppError::Forbidden(_) => FORBIDDEN,
        AppError::BadInput(_) => BAD_USER_INPUT,
        // Where a refusal is not a `userErrors` entry (a field without a payload).
        AppError::Refused(r) => match r.code {
            UserErrorCode::OrderAlreadyConfirmed
            | UserErrorCode::OrderAlreadyCancelled
            | UserErrorCode::OrderNotConfirmed
            | UserErrorCode::RefundWindowClosed => CONFLICT,
            UserErrorCode::OrderNotFound => NOT_FOUND,
            UserErrorCode::EmailTaken => CONFLICT,
            UserErrorCode::InvalidCredentials => UNAUTHENTICATED,
            _ => BAD_USER_INPUT,
        },
        AppError::NotFound(_) => NOT_FOUND,
        AppError::Conflict(_) => CONFLICT,
        AppError::TooManyRequests { .. } => TOO_MANY_REQUESTS,
        AppError::Database(_) | AppError::Mongo(_) | AppError::Broker(_) | AppError::Internal(_) => INTERNAL,
    }
}

/// The longest error message a client gets, in characters. Engine messages quote the document
/// (unknown names, bad values); a 64 KiB name must not come back whole.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// Gives every error its `extensions.code`, once, at the edge:
/// - a service error ([`AppError`], which resolvers return with `?`) gets its code; an internal
///   one is logged and says only "internal error";
/// - any other error with a source (a driver's error that reached a resolver's `?` without
///   becoming an `AppError`) is internal too;
/// - an error without a source is the engine's own (parse, validation, limits, variable
///   coercion): the client's, `BAD_USER_INPUT`, unless it already carries a code.
///
/// Long messages are cut to [`MAX_MESSAGE_CHARS`].
pub fn ensure_codes(errors: &mut [ServerError]) {
    for e in errors {
        let has_code = e.extensions.as_ref().is_some_and(|x| x.get("code").is_some());
        if !has_code {
            let source = e.source.clone();
            let (code, retry_after) = match source.as_deref().map(|s| s.downcast_ref::<AppError>()) {
                Some(Some(app)) => (code_of(app), retry_after_of(app)),
                Some(None) => (INTERNAL, None),
                // The automatic persisted queries protocol's own: the client sends the document.
                None if e.message == "PersistedQueryNotFound" => (PERSISTED_QUERY_NOT_FOUND, None),
                None => (BAD_USER_INPUT, None),
            };
            if code == INTERNAL {
                tracing::error!(error = %e.message, path = ?e.path, "internal error");
                e.message = "internal error".to_string();
            }
            let ext = e.extensions.get_or_insert_with(Default::default);
            ext.set("code", code);
            if let Some(secs) = retry_after {
                ext.set("retryAfterSeconds", secs);
            }
        }
        if let Some((cut, _)) = e.message.char_indices().nth(MAX_MESSAGE_CHARS) {
            e.message.truncate(cut);
            e.message.push('…');
        }
    }
}

fn retry_after_of(e: &AppError) -> Option<u64> {
    match e {
        AppError::TooManyRequests { retry_after_secs } => Some(*retry_after_secs),
        _ => None,
    }
}

/// Applies [`ensure_codes`] to every answer the schema gives, over HTTP and websocket alike.
pub struct ErrorPolicy;

impl ExtensionFactory for ErrorPolicy {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorPolicy)
    }
}

#[async_trait::async_trait]
impl Extension for ErrorPolicy {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut resp = next.run(ctx).await;
        ensure_codes(&mut resp.errors);
        resp
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream)
            .map(|mut resp| {
                ensure_codes(&mut resp.errors);
                resp
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_get_a_code_and_long_messages_are_cut() {
        let mut errors = vec![
            ServerError::new(format!("Unknown field \"{}\"", "é".repeat(1000)), None),
            ServerError::new("short", None),
        ];
        ensure_codes(&mut errors);
        assert_eq!(errors[0].message.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(errors[0].message.ends_with('…'));
        assert_eq!(errors[1].message, "short");
        for e in &errors {
            assert_eq!(code(e), Some(BAD_USER_INPUT));
        }
    }

    fn code(e: &ServerError) -> Option<&str> {
        match e.extensions.as_ref()?.get("code")? {
            async_graphql::Value::String(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// What a resolver's `?` makes of an error, at the position the engine reports.
    fn from_resolver(e: impl Into<async_graphql::Error>) -> ServerError {
        e.into().into_server_error(async_graphql::Pos::default())
    }

    #[test]
    fn service_errors_get_their_code_and_internal_ones_say_nothing() {
        let mut errors = vec![
            from_resolver(AppError::NotFound("order")),
            from_resolver(AppError::bad_input("first must be between 1 and 100")),
            from_resolver(AppError::Forbidden("the operator role is required")),
            from_resolver(AppError::TooManyRequests { retry_after_secs: 42 }),
            from_resolver(AppError::Internal("pool timed out at 10.0.0.7".into())),
            // A driver error a resolver let through without making it a service error.
            from_resolver(sqlx::Error::PoolTimedOut),
        ];
        ensure_codes(&mut errors);
        let codes: Vec<_> = errors.iter().map(code).collect();
        assert_eq!(
            codes,
            [
                Some(NOT_FOUND),
                Some(BAD_USER_INPUT),
                Some(FORBIDDEN),
                Some(TOO_MANY_REQUESTS),
                Some(INTERNAL),
                Some(INTERNAL)
            ]
        );
        assert_eq!(errors[0].message, "order not found");
        assert_eq!(errors[4].message, "internal error");
        assert_eq!(errors[5].message, "internal error");
        assert_eq!(
            errors[3].extensions.as_ref().unwrap().get("retryAfterSeconds"),
            Some(&async_graphql::Value::from(42u64))
        );
    }
}
