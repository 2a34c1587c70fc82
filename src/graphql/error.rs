//! The one place errors become GraphQL errors. Every error carries `extensions.code`; internal
//! details go to the log (with the request's span), never to the client.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextRequest, NextSubscribe};
use async_graphql::{Error, ErrorExtensions, Response, ServerError};
use futures::stream::BoxStream;
use futures::StreamExt;

use ecommerce_platform::error::AppError;

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

/// The longest error message a client gets, in characters. Engine messages quote the document
/// (unknown names, bad values); a 64 KiB name must not come back whole.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// Errors raised by the GraphQL engine itself (parse, validation, limits, variable coercion) are the
/// client's: give them `BAD_USER_INPUT` unless they already carry a code. Long messages are cut
/// to [`MAX_MESSAGE_CHARS`].
pub fn ensure_codes(errors: &mut [ServerError]) {
    for e in errors {
        let has_code = e.extensions.as_ref().is_some_and(|x| x.get("code").is_some());
        if !has_code {
            e.extensions.get_or_insert_with(Default::default).set("code", BAD_USER_INPUT);
        }
        if let Some((cut, _)) = e.message.char_indices().nth(MAX_MESSAGE_CHARS) {
            e.message.truncate(cut);
            e.message.push('…');
        }
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
            assert_eq!(
                e.extensions.as_ref().unwrap().get("code"),
                Some(&async_graphql::Value::from(BAD_USER_INPUT))
            );
        }
    }
}
