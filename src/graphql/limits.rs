//! Limits on a document's shape, checked once it is parsed and before the engine walks it.
//!
//! Why not the engine's own `limit_depth`: it counts introspection like any other field, and the
//! standard introspection query (graphql-js `getIntrospectionQuery()`, which GraphiQL, GraphQL
//! Code Generator, Apollo and Relay send) nests `ofType` seven levels under
//! `__schema { types { fields { args { type ...` (depth 13), so every schema-aware tool was
//! refused. Here the depth limit applies to the application's fields only, and introspection gets
//! the rule graphql-js applies to it (`MaxIntrospectionDepthRule`, in `specifiedRules` since
//! 16.9): at most two nested lists of `fields`, `interfaces`, `possibleTypes` or `inputFields`.
//! That rule is what bounds an introspection answer: `ofType` chains are single objects, while
//! `fields { type { fields { type { fields ...` fans out once per level.
//!
//! Why here and not in validation: the engine expands fragment spreads while it checks recursion
//! depth and validates, and it does so without memory of fragments already seen. A chain of
//! fragments that each spread the next twice (or a fragment that spreads itself) makes that walk
//! exponential. This walk remembers each fragment, so it is linear in the document, and refuses
//! cycles and documents that would expand past [`MAX_EXPANDED_FIELDS`] before the engine sees them.
//!
//! Aliases are limited too: they let one document run the same field many times
//! (`a1: login(..) a2: login(..) ...`), a way around per-request accounting. Complexity is the
//! engine's limit (`build_schema`); body size is the HTTP layer's; batch size is checked in `http`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use sha2::{Digest, Sha256};

use super::persisted::PersistedQueries;
use async_graphql::{Name, Pos, Request, ServerError, ServerResult};

/// Fields a document may select once its fragments are expanded. The complexity limit (default
/// 1,000, a field costs at least 1) refuses anything near this later; this bound only keeps the
/// engine's own fragment-expanding walks from running long before it gets there.
pub const MAX_EXPANDED_FIELDS: usize = 10_000;

/// Nesting of selection sets (fields with selections, fragment spreads, inline fragments); the
/// engine refuses deeper documents with the same message (`limit_recursive_depth`).
pub const MAX_RECURSIVE_DEPTH: usize = 32;

/// graphql-js `MaxIntrospectionDepthRule`: three nested introspection lists are refused.
pub const MAX_INTROSPECTION_LISTS: usize = 2;

/// What a document may look like.
#[derive(Debug, Clone, Copy)]
pub struct DocumentLimits {
    /// Nesting of the application's fields (introspection does not count; see the module doc).
    pub max_depth: usize,
    /// Aliased fields, each counted where it is written.
    pub max_aliases: usize,
}

/// A document's measurements (see [`measure`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// Deepest nesting of fields outside `__schema` / `__type` (those two count as one level).
    pub depth: usize,
    /// Deepest nesting of introspection list fields under `__schema` / `__type`.
    pub introspection_lists: usize,
    /// Fields selected once every fragment spread is replaced by its fragment (saturating).
    pub expanded_fields: usize,
    /// Deepest nesting of selection sets, as the engine's recursion limit counts it.
    height: usize,
}

impl Shape {
    /// Two selections side by side.
    fn beside(self, other: Shape) -> Shape {
        Shape {
            depth: self.depth.max(other.depth),
            introspection_lists: self.introspection_lists.max(other.introspection_lists),
            expanded_fields: self.expanded_fields.saturating_add(other.expanded_fields),
            height: self.height.max(other.height),
        }
    }
}

/// Why a document is refused before execution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("Query is nested too deep.")]
    TooDeep,
    #[error("Maximum introspection depth exceeded")]
    IntrospectionTooDeep,
    #[error("Query is too large: more than {MAX_EXPANDED_FIELDS} fields once fragments are expanded")]
    TooLarge,
    #[error("The recursion depth of the query cannot be greater than `{MAX_RECURSIVE_DEPTH}`")]
    TooRecursive,
    #[error("Cannot spread fragment \"{0}\" within itself.")]
    FragmentCycle(String),
    #[error("Query has too many aliases ({0} > {1})")]
    TooManyAliases(usize, usize),
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Mode {
    Application,
    Introspection,
}

struct Walk<'a> {
    doc: &'a ExecutableDocument,
    memo: HashMap<(&'a str, Mode), Shape>,
    expanding: HashSet<&'a str>,
}

impl<'a> Walk<'a> {
    fn set(&mut self, set: &'a SelectionSet, mode: Mode, level: usize) -> Result<Shape, Refusal> {
        if level > MAX_RECURSIVE_DEPTH {
            return Err(Refusal::TooRecursive);
        }
        let mut shape = Shape::default();
        for item in &set.items {
            let s = match &item.node {
                Selection::Field(f) => {
                    let f = &f.node;
                    let nested = !f.selection_set.node.items.is_empty();
                    let name = f.name.node.as_str();
                    let inner_mode =
                        if name == "__schema" || name == "__type" { Mode::Introspection } else { mode };
                    let inner = if nested {
                        self.set(&f.selection_set.node, inner_mode, level + 1)?
                    } else {
                        Shape::default()
                    };
                    let is_list = matches!(name, "fields" | "interfaces" | "possibleTypes" | "inputFields");
                    Shape {
                        depth: match (mode, inner_mode) {
                            (Mode::Application, Mode::Application) => 1 + inner.depth,
                            (Mode::Application, Mode::Introspection) => 1,
                            (Mode::Introspection, _) => 0,
                        },
                        introspection_lists: inner.introspection_lists
                            + usize::from(mode == Mode::Introspection && is_list),
                        expanded_fields: inner.expanded_fields.saturating_add(1),
                        height: if nested { 1 + inner.height } else { 0 },
                    }
                }
                Selection::InlineFragment(f) => {
                    let inner = self.set(&f.node.selection_set.node, mode, level + 1)?;
                    Shape { height: 1 + inner.height, ..inner }
                }
                Selection::FragmentSpread(s) => {
                    let inner = self.fragment(&s.node.fragment_name.node, mode, level + 1)?;
                    Shape { height: 1 + inner.height, ..inner }
                }
            };
            shape = shape.beside(s);
        }
        if shape.expanded_fields > MAX_EXPANDED_FIELDS {
            return Err(Refusal::TooLarge);
        }
        Ok(shape)
    }

    fn fragment(&mut self, name: &'a Name, mode: Mode, level: usize) -> Result<Shape, Refusal> {
        let key = (name.as_str(), mode);
        if let Some(shape) = self.memo.get(&key) {
            if level + shape.height > MAX_RECURSIVE_DEPTH {
                return Err(Refusal::TooRecursive);
            }
            return Ok(*shape);
        }
        // An unknown fragment is validation's to report.
        let Some(def) = self.doc.fragments.get(name) else { return Ok(Shape::default()) };
        if !self.expanding.insert(name.as_str()) {
            return Err(Refusal::FragmentCycle(name.to_string()));
        }
        let shape = self.set(&def.node.selection_set.node, mode, level);
        self.expanding.remove(name.as_str());
        let shape = shape?;
        self.memo.insert(key, shape);
        Ok(shape)
    }
}

/// Measures every operation of `doc` (the largest of each measure), in time linear in the
/// document. Fragment cycles, expansions past [`MAX_EXPANDED_FIELDS`] and nesting past
/// [`MAX_RECURSIVE_DEPTH`] are refused on the way.
pub fn measure(doc: &ExecutableDocument) -> Result<Shape, Refusal> {
    let mut walk = Walk { doc, memo: HashMap::new(), expanding: HashSet::new() };
    let mut shape = Shape::default();
    for (_, op) in doc.operations.iter() {
        shape = shape.beside(walk.set(&op.node.selection_set.node, Mode::Application, 0)?);
        if shape.expanded_fields > MAX_EXPANDED_FIELDS {
            return Err(Refusal::TooLarge);
        }
    }
    // Fragments no operation uses are validation's to refuse, but a cycle among them must not
    // reach the engine's walk either.
    for name in doc.fragments.keys() {
        walk.fragment(name, Mode::Application, 1)?;
    }
    Ok(shape)
}

/// Checks a parsed document against `limits`.
pub fn check(doc: &ExecutableDocument, limits: &DocumentLimits) -> Result<Shape, Refusal> {
    let shape = measure(doc)?;
    if shape.depth > limits.max_depth {
        return Err(Refusal::TooDeep);
    }
    if shape.introspection_lists > MAX_INTROSPECTION_LISTS {
        return Err(Refusal::IntrospectionTooDeep);
    }
    let aliases = count_aliases(doc);
    if aliases > limits.max_aliases {
        return Err(Refusal::TooManyAliases(aliases, limits.max_aliases));
    }
    Ok(shape)
}

// Kept by hand: async-graphql limits depth, complexity, recursion and directives, not the number
// of aliases (graphql-js has no such rule either).
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

/// A syntax error without the document quoted back: where it is, and what was expected there.
/// The parser's own message repeats the offending line, which may be the whole (64 KiB) document.
pub fn syntax_error(e: async_graphql::parser::Error) -> ServerError {
    use async_graphql::parser::Error;
    let positions: Vec<Pos> = e.positions().collect();
    let message = match &e {
        Error::Syntax { message, .. } => {
            // pest ends its report with "  = expected selection" (or "unexpected ...").
            let what =
                message.lines().rev().find_map(|l| l.trim().strip_prefix("= ")).unwrap_or("invalid syntax");
            format!("Syntax error: {what}")
        }
        other => other.to_string(),
    };
    let mut err = ServerError::new(message, positions.first().copied());
    err.locations = positions;
    err
}

/// Parses the request's document once, refuses it by [`check`] before the engine walks it, and
/// hands the parsed document on. It also speaks the automatic persisted queries protocol (see
/// [`super::persisted`]): a document sent with its hash is kept only once it passed the checks,
/// and a hash alone is answered from what was kept.
pub struct DocumentLimitsExtension {
    pub limits: DocumentLimits,
    /// `None` where nothing is served (printing the schema).
    pub persisted: Option<PersistedQueries>,
}

impl ExtensionFactory for DocumentLimitsExtension {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Checker { limits: self.limits, persisted: self.persisted.clone() })
    }
}

struct Checker {
    limits: DocumentLimits,
    persisted: Option<PersistedQueries>,
}

/// The `persistedQuery` request extension.
#[derive(serde::Deserialize)]
struct PersistedQuery {
    version: i32,
    #[serde(rename = "sha256Hash")]
    sha256_hash: String,
}

/// The message the protocol's clients look for to send the document with its hash.
pub const PERSISTED_QUERY_NOT_FOUND: &str = "PersistedQueryNotFound";

impl Checker {
    fn checked(&self, query: &str) -> ServerResult<ExecutableDocument> {
        let doc = async_graphql::parser::parse_query(query).map_err(syntax_error)?;
        check(&doc, &self.limits).map_err(|r| ServerError::new(r.to_string(), None))?;
        Ok(doc)
    }
}

#[async_trait::async_trait]
impl Extension for Checker {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let persisted = match (&self.persisted, request.extensions.remove("persistedQuery")) {
            (Some(cache), Some(value)) => {
                let p: PersistedQuery = async_graphql::from_value(value).map_err(|_| {
                    ServerError::new("Invalid \"PersistedQuery\" extension configuration.", None)
                })?;
                if p.version != 1 {
                    return Err(ServerError::new(
                        "Only version 1 of the \"PersistedQuery\" extension is supported.",
                        None,
                    ));
                }
                Some((cache, p.sha256_hash))
            }
            _ => None,
        };
        let doc = match persisted {
            Some((cache, hash)) if request.query.is_empty() => {
                // Kept only after it passed the same checks.
                cache.get(&hash).ok_or_else(|| ServerError::new(PERSISTED_QUERY_NOT_FOUND, None))?
            }
            Some((cache, hash)) => {
                if format!("{:x}", Sha256::digest(request.query.as_bytes())) != hash {
                    return Err(ServerError::new("provided sha does not match query", None));
                }
                let doc = self.checked(&request.query)?;
                cache.put(hash, doc.clone(), request.query.len());
                doc
            }
            // Parsed already (a subscription's document): checked as it is.
            None if request.query.is_empty() => {
                check(request.parsed_query()?, &self.limits)
                    .map_err(|r| ServerError::new(r.to_string(), None))?;
                return next.run(ctx, request).await;
            }
            None => self.checked(&request.query)?,
        };
        request.query = String::new();
        request.set_parsed_query(doc);
        next.run(ctx, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::parser::parse_query;

    const LIMITS: DocumentLimits = DocumentLimits { max_depth: 12, max_aliases: 30 };

    fn shape(doc: &str) -> Result<Shape, Refusal> {
        measure(&parse_query(doc).unwrap())
    }

    /// The standard introspection query, exactly as graphql-js 16 writes it with every option on.
    const INTROSPECTION: &str = include_str!("../../tests/fixtures/introspection-query.graphql");

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

    #[test]
    fn the_standard_introspection_query_passes_and_counts_as_one_level() {
        let s = check(&parse_query(INTROSPECTION).unwrap(), &LIMITS).unwrap();
        assert_eq!(s.depth, 1);
        // types { fields { ... } } and types { inputFields { ... } }: graphql-js counts `fields`
        // and `inputFields` but not `types`, so its own query sits at one list.
        assert_eq!(s.introspection_lists, 1);
        assert!(s.expanded_fields > 100 && s.expanded_fields < 1000, "{s:?}");
    }

    #[test]
    fn depth_counts_fields_through_fragments_but_not_introspection() {
        assert_eq!(shape("{ me { id } }").unwrap().depth, 2);
        assert_eq!(shape("{ a { b { c { d } } } }").unwrap().depth, 4);
        assert_eq!(shape("{ a { ...F } } fragment F on A { b { ... on B { c } } }").unwrap().depth, 3);
        assert_eq!(shape("{ __typename a { __typename } }").unwrap().depth, 2);
        assert_eq!(
            shape("{ __type(name: \"Q\") { ofType { ofType { ofType { name } } } } }").unwrap().depth,
            1
        );
        // A fragment spread inside and outside introspection is measured in each place.
        let s = shape("{ __schema { ...F } a { ...F } } fragment F on X { b { c } }").unwrap();
        assert_eq!(s.depth, 3);
    }

    #[test]
    fn deep_application_queries_are_refused_at_the_limit() {
        let at = |n: usize| format!("{} x {}", "a { ".repeat(n - 1), "} ".repeat(n - 1));
        let doc = parse_query(format!("{{ {} }}", at(12))).unwrap();
        assert_eq!(check(&doc, &LIMITS).unwrap().depth, 12);
        let doc = parse_query(format!("{{ {} }}", at(13))).unwrap();
        assert_eq!(check(&doc, &LIMITS), Err(Refusal::TooDeep));
        // Introspection beside does not hide it.
        let doc = parse_query(format!("{{ __schema {{ types {{ name }} }} {} }}", at(13))).unwrap();
        assert_eq!(check(&doc, &LIMITS), Err(Refusal::TooDeep));
    }

    #[test]
    fn introspection_lists_follow_graphql_js() {
        // Two nested lists pass, three do not, through fragments and inline fragments alike.
        let two = "{ __schema { types { fields { type { fields { name } } } } } }";
        assert_eq!(shape(two).unwrap().introspection_lists, 2);
        assert!(check(&parse_query(two).unwrap(), &LIMITS).is_ok());
        for three in [
            "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }",
            "{ __type(name: \"Query\") { fields { type { interfaces { possibleTypes { name } } } } } }",
            "{ __schema { types { ...F } } } fragment F on __Type { fields { type { ... on __Type { inputFields { type { fields { name } } } } } } }",
        ] {
            assert_eq!(check(&parse_query(three).unwrap(), &LIMITS), Err(Refusal::IntrospectionTooDeep), "{three}");
        }
        // Outside introspection the names mean nothing special.
        assert_eq!(shape("{ fields { fields { fields { x } } } }").unwrap().introspection_lists, 0);
    }

    #[test]
    fn fragment_cycles_are_refused() {
        for doc in [
            "{ ...A } fragment A on Query { ...A }",
            "{ ...A } fragment A on Query { x { ...B } } fragment B on X { ...A }",
            // Not used by the operation, still refused before the engine walks it.
            "{ x } fragment A on Query { ...B ...B } fragment B on Query { ...A }",
        ] {
            assert!(matches!(shape(doc), Err(Refusal::FragmentCycle(_))), "{doc}");
        }
    }

    #[test]
    fn doubling_fragments_are_refused_quickly() {
        // F0 spreads F1 twice, F1 spreads F2 twice, ...: 2^30 fields once expanded.
        let mut doc = String::from("{ ...F0 }");
        for i in 0..30 {
            doc.push_str(&format!(" fragment F{i} on Query {{ ...F{n} ...F{n} }}", n = i + 1));
        }
        doc.push_str(" fragment F30 on Query { __typename }");
        let started = std::time::Instant::now();
        let r = shape(&doc);
        assert!(matches!(r, Err(Refusal::TooLarge) | Err(Refusal::TooRecursive)), "{r:?}");
        // Linear: a blow-up would take minutes, not the milliseconds this takes.
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Shallower and wide: under the recursion limit, over the field limit.
        let mut doc = String::from("{ ...F0 }");
        for i in 0..16 {
            doc.push_str(&format!(" fragment F{i} on Query {{ ...F{n} ...F{n} }}", n = i + 1));
        }
        doc.push_str(" fragment F16 on Query { a b }");
        assert_eq!(shape(&doc), Err(Refusal::TooLarge));
        // The same shape within bounds is measured exactly.
        let mut doc = String::from("{ ...F0 }");
        for i in 0..4 {
            doc.push_str(&format!(" fragment F{i} on Query {{ ...F{n} ...F{n} }}", n = i + 1));
        }
        doc.push_str(" fragment F4 on Query { a b }");
        assert_eq!(shape(&doc).unwrap().expanded_fields, 32);
    }

    #[test]
    fn recursion_is_bounded_through_remembered_fragments() {
        // F is measured shallow first, then reached again deep: the remembered shape still counts.
        let deep = format!("{}...F{}", "a { ".repeat(31), " }".repeat(31));
        let doc = format!("{{ ...F {deep} }} fragment F on Query {{ b {{ c }} }}");
        assert_eq!(shape(&doc), Err(Refusal::TooRecursive));
    }

    #[test]
    fn syntax_errors_say_where_and_what_without_quoting_the_document() {
        let secret = "x".repeat(5000);
        let e = parse_query(format!("{{ products {{ {secret} ")).unwrap_err();
        let e = syntax_error(e);
        assert!(e.message.starts_with("Syntax error: "), "{}", e.message);
        assert!(!e.message.contains("xxx") && e.message.len() < 200, "{}", e.message);
        assert_eq!(e.locations.first().map(|p| p.line), Some(1));
    }
}
