//! Limits the engine does not have built in: aliases per document.
//!
//! Aliases let one document run the same field many times (`a1: login(..) a2: login(..) ...`), a
//! way around per-request accounting. Depth and complexity are the engine's own limits
//! (`build_schema`); body size is the HTTP layer's; batch size is checked in `http`.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ServerError, ServerResult, Variables};

/// Aliased fields in every operation and fragment of `doc`, each counted where it is written.
pub fn count_aliases(doc: &ExecutableDocument) -> usize {
    fn walk(set: &SelectionSet) -> usize {
        set.items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(f) => usize::from(f.node.alias.is_some()) + walk(&f.node.selection_set.node),
                Selection::InlineFragment(f) => walk(&f.node.selection_set.node),
                Selection::FragmentSpread(_) => 0,
            })
            .sum()
    }
    let in_operations: usize = doc.operations.iter().map(|(_, op)| walk(&op.node.selection_set.node)).sum();
    let in_fragments: usize = doc.fragments.values().map(|f| walk(&f.node.selection_set.node)).sum();
    in_operations + in_fragments
}

/// Refuses documents with more than `max` aliases.
pub struct AliasLimit {
    pub max: usize,
}

impl ExtensionFactory for AliasLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AliasLimitExtension { max: self.max })
    }
}

struct AliasLimitExtension {
    max: usize,
}

#[async_trait::async_trait]
impl Extension for AliasLimitExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let n = count_aliases(&doc);
        if n > self.max {
            return Err(ServerError::new(format!("Query has too many aliases ({n} > {})", self.max), None));
        }
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::count_aliases;
    use async_graphql::parser::parse_query;

    #[test]
    fn counts_aliases_in_operations_inline_fragments_and_fragments() {
        let doc = parse_query(
            "query A { a: me { id } b: me { x: id } ... on Query { c: cart { itemCount } } ...F }
             query B { d: orders { id } }
             fragment F on Query { e: products { s: sku } }",
        )
        .unwrap();
        assert_eq!(count_aliases(&doc), 7);
        assert_eq!(count_aliases(&parse_query("{ me { id } }").unwrap()), 0);
    }
}
