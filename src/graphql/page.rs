//! Relay cursor connections for the buyer's orders and the catalog: `first`/`after` forward,
//! `last`/`before` backward.

use async_graphql::connection::{Edge, EmptyFields, PageInfo};
use async_graphql::OutputType;

use ecommerce_platform::error::AppError;

/// The largest page.
pub const MAX_PAGE: i32 = 100;

/// Which page a connection field was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: i64,
    /// Counted from the end (`last`), not the start (`first`).
    pub from_end: bool,
    pub after: Option<String>,
    pub before: Option<String>,
}

impl PageRequest {
    /// `first` or `last` (not both; `first: default` when neither), each 0 to 100.
    pub fn new(
        first: Option<i32>,
        last: Option<i32>,
        after: Option<String>,
        before: Option<String>,
        default: i32,
    ) -> Result<Self, AppError> {
        let (n, from_end) = match (first, last) {
            (Some(_), Some(_)) => return Err(AppError::bad_input("pass first or last, not both")),
            (Some(n), None) => (n, false),
            (None, Some(n)) => (n, true),
            (None, None) => (default, false),
        };
        if !(0..=MAX_PAGE).contains(&n) {
            return Err(AppError::bad_input(format!("first and last must be 0 to {MAX_PAGE}")));
        }
        Ok(PageRequest { limit: n as i64, from_end, after, before })
    }

    /// The page's edges and page info, from the nodes read (in list order) and whether more lie
    /// beyond the page in the direction it was read.
    pub fn finish<T: OutputType>(
        &self,
        nodes: Vec<T>,
        more: bool,
        cursor: impl Fn(&T) -> String,
    ) -> (Vec<Edge<String, T, EmptyFields>>, PageInfo) {
        let edges: Vec<_> = nodes.into_iter().map(|n| Edge::new(cursor(&n), n)).collect();
        let page_info = PageInfo {
            // Relay: a page read forward may say whether anything lies before its `after` only if
            // that is cheap; that something does, when `after` came from a page, is.
            has_previous_page: if self.from_end { more } else { self.after.is_some() },
            has_next_page: if self.from_end { self.before.is_some() } else { more },
            start_cursor: edges.first().map(|e| e.cursor.clone()),
            end_cursor: edges.last().map(|e| e.cursor.clone()),
        };
        (edges, page_info)
    }
}

/// The complexity of a connection field: its page size times its selection.
pub fn complexity(first: Option<i32>, last: Option<i32>, default: i32, child: usize) -> usize {
    first.or(last).unwrap_or(default).clamp(1, MAX_PAGE) as usize * child
}

/// A connection type: edges, nodes, page info and a total count, with descriptions (the
/// engine's generic `Connection` has none for its type).
macro_rules! connection {
    ($name:ident, $node:ty, $doc:literal, $total_doc:literal) => {
        pub struct $name {
            pub page_info: async_graphql::connection::PageInfo,
            pub edges:
                Vec<async_graphql::connection::Edge<String, $node, async_graphql::connection::EmptyFields>>,
            pub total_count: i64,
        }

        #[doc = $doc]
        #[async_graphql::Object]
        impl $name {
            /// Information to aid in pagination.
            async fn page_info(&self) -> &async_graphql::connection::PageInfo {
                &self.page_info
            }
            /// A list of edges.
            async fn edges(
                &self,
            ) -> &[async_graphql::connection::Edge<String, $node, async_graphql::connection::EmptyFields>]
            {
                &self.edges
            }
            /// A list of nodes.
            async fn nodes(&self) -> Vec<&$node> {
                self.edges.iter().map(|e| &e.node).collect()
            }
            #[doc = $total_doc]
            async fn total_count(&self) -> i64 {
                self.total_count
            }
        }
    };
}
pub(crate) use connection;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_or_last_within_bounds() {
        let p = PageRequest::new(None, None, None, None, 20).unwrap();
        assert_eq!((p.limit, p.from_end), (20, false));
        let p = PageRequest::new(None, Some(5), None, Some("c".into()), 20).unwrap();
        assert_eq!((p.limit, p.from_end), (5, true));
        assert!(PageRequest::new(Some(1), Some(1), None, None, 20).is_err());
        assert!(PageRequest::new(Some(101), None, None, None, 20).is_err());
        assert!(PageRequest::new(None, Some(-1), None, None, 20).is_err());
        assert!(PageRequest::new(Some(0), None, None, None, 20).is_ok());
    }

    #[test]
    fn page_info_follows_the_direction_read() {
        let fwd = PageRequest::new(Some(2), None, Some("a".into()), None, 20).unwrap();
        let (edges, info) = fwd.finish(vec![1, 2], true, |n| n.to_string());
        assert_eq!(edges.len(), 2);
        assert!(info.has_next_page && info.has_previous_page);
        assert_eq!((info.start_cursor.as_deref(), info.end_cursor.as_deref()), (Some("1"), Some("2")));
        let back = PageRequest::new(None, Some(2), None, None, 20).unwrap();
        let (_, info) = back.finish(vec![1, 2], false, |n| n.to_string());
        assert!(!info.has_previous_page && !info.has_next_page);
    }
}
