//! Introspection answers that match the schema the API publishes.
//!
//! async-graphql answers `__schema { description }` with a fixed text describing what a GraphQL
//! schema is ("A GraphQL Schema defines the capabilities of a GraphQL server. ..."), where the
//! specification means the description of *this* schema. A client schema built from introspection
//! (GraphiQL's explorer, GraphQL Code Generator, `buildClientSchema`) then carries a description
//! that `schema/schema.graphql` does not have. This API's schema has no description, so the field
//! answers `null`, as the specification says it should.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo};
use async_graphql::{ServerResult, Value};

pub struct SchemaDescription;

impl ExtensionFactory for SchemaDescription {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(SchemaDescription)
    }
}

#[async_trait::async_trait]
impl Extension for SchemaDescription {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        if info.parent_type == "__Schema" && info.name == "description" {
            return Ok(Some(Value::Null));
        }
        next.run(ctx, info).await
    }
}
