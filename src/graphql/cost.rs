//! What a query costs, told to the client: every answer to a query or mutation carries
//! `extensions.cost` (`{ "complexity": 12, "maxComplexity": 1000, "maxDepth": 12, "maxAliases": 30 }`),
//! and a document over the complexity limit is refused with the same numbers in the error's
//! extensions, so a client can price a document before it grows past the limit instead of finding
//! out from a refusal.
//!
//! The engine computes the complexity during validation either way; the limit is enforced here
//! rather than by the engine's `limit_complexity`, whose refusal does not say by how much.

use std::sync::{Arc, Mutex};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextRequest, NextValidation};
use async_graphql::{Response, ServerError, ValidationResult, Value};

use super::error::BAD_USER_INPUT;

/// The document limits a client prices against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_complexity: usize,
    pub max_depth: usize,
    pub max_aliases: usize,
}

/// Enforces the complexity limit and reports the cost (see the module doc).
pub struct QueryCost(pub Limits);

impl ExtensionFactory for QueryCost {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Priced { limits: self.0, complexity: Mutex::new(None) })
    }
}

struct Priced {
    limits: Limits,
    /// The validated document's complexity, once validation ran.
    complexity: Mutex<Option<usize>>,
}

impl Priced {
    fn cost(&self, complexity: usize) -> Value {
        let l = self.limits;
        let n = |v: usize| Value::from(v as u64);
        Value::Object(
            [
                ("complexity", n(complexity)),
                ("maxComplexity", n(l.max_complexity)),
                ("maxDepth", n(l.max_depth)),
                ("maxAliases", n(l.max_aliases)),
            ]
            .into_iter()
            .map(|(k, v)| (async_graphql::Name::new(k), v))
            .collect(),
        )
    }
}

#[async_trait::async_trait]
impl Extension for Priced {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        if result.complexity > self.limits.max_complexity {
            let mut e = ServerError::new(
                format!(
                    "Query is too complex: it costs {}, the limit is {}.",
                    result.complexity, self.limits.max_complexity
                ),
                None,
            );
            let ext = e.extensions.get_or_insert_with(Default::default);
            ext.set("code", BAD_USER_INPUT);
            ext.set("cost", self.cost(result.complexity));
            return Err(vec![e]);
        }
        *self.complexity.lock().expect("not poisoned") = Some(result.complexity);
        Ok(result)
    }

    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut resp = next.run(ctx).await;
        let complexity = *self.complexity.lock().expect("not poisoned");
        if let Some(c) = complexity {
            resp.extensions.insert("cost".to_string(), self.cost(c));
        }
        resp
    }
}
