//! The GraphQL playground at `GET /graphql`: GraphiQL, served whole from this binary.
//!
//! Why vendored: the page async-graphql generates loads React and GraphiQL from a public CDN, so
//! on a machine without internet (a corporate network, a laptop on a plane, these CI machines) it
//! stays at "Loading..." forever. The UMD builds of `graphiql`, `react` and `react-dom` are
//! committed in `vendor/`, byte for byte as their npm packages ship them at the versions in
//! `vendor/VERSIONS`, with their licences (`scripts/vendor-graphiql.sh` writes and checks them).
//! The page's own code is `playground.js`; nothing runs inline, so the page gets a content
//! security policy that allows scripts and connections to this origin only.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("playground.js");
const STYLE: &str = include_str!("playground.css");

/// Third-party files, as their npm packages ship them.
pub const VENDORED: &[(&str, &str, &[u8])] = &[
    ("graphiql.min.js", JS, include_bytes!("vendor/graphiql.min.js")),
    ("graphiql.min.css", CSS, include_bytes!("vendor/graphiql.min.css")),
    ("react.production.min.js", JS, include_bytes!("vendor/react.production.min.js")),
    ("react-dom.production.min.js", JS, include_bytes!("vendor/react-dom.production.min.js")),
];

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Scripts and connections (HTTP and websocket) to this origin only, no framing. Styles may be
/// inline: GraphiQL's editor positions its panes and widgets with style attributes.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                       connect-src 'self'; img-src 'self' data:; font-src 'self' data:; \
                       frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(content_type: &'static str, cache: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response()
}

/// The page, which `GET /graphql` answers when it carries no query (see `http`).
pub fn page() -> Response {
    asset("text/html; charset=utf-8", "no-cache", INDEX.as_bytes())
}

/// `/graphql/assets/*`; the API mounts them, and answers `GET /graphql` with [`page`], only while
/// the playground is enabled (`GRAPHQL_PLAYGROUND`).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new()
        .route("/graphql/assets/playground.js", get(|| async { asset(JS, "no-cache", SCRIPT.as_bytes()) }))
        .route("/graphql/assets/playground.css", get(|| async { asset(CSS, "no-cache", STYLE.as_bytes()) }));
    for &(name, content_type, body) in VENDORED {
        // Revalidated daily: a new version of the API may ship new files under the same name.
        router = router.route(
            &format!("/graphql/assets/{name}"),
            get(move || async move { asset(content_type, "public, max-age=86400", body) }),
        );
    }
    router
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_files_this_module_serves_and_runs_nothing_inline() {
        let mut served: Vec<String> =
            VENDORED.iter().map(|(name, ..)| format!("/graphql/assets/{name}")).collect();
        served.extend(["/graphql/assets/playground.js".into(), "/graphql/assets/playground.css".into()]);
        for attr in ["src=\"", "href=\""] {
            for reference in INDEX.split(attr).skip(1).map(|rest| &rest[..rest.find('"').unwrap()]) {
                assert!(
                    reference.starts_with("data:") || served.iter().any(|s| s == reference),
                    "index.html refers to {reference}, which is not served here"
                );
            }
        }
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style="), "nothing inline (CSP)");
        assert!(!INDEX.contains("://"), "no absolute URL: everything comes from this origin");
    }

    #[test]
    fn vendored_files_are_the_packages_with_their_licences() {
        let versions = include_str!("vendor/VERSIONS");
        for package in ["graphiql", "react", "react-dom"] {
            assert!(versions.lines().any(|l| l.starts_with(&format!("{package} "))), "{package} in VERSIONS");
        }
        for licence in [
            include_str!("vendor/LICENSE.graphiql"),
            include_str!("vendor/LICENSE.react"),
            include_str!("vendor/LICENSE.react-dom"),
        ] {
            assert!(licence.contains("MIT License") || licence.contains("Permission is hereby granted"));
        }
        // The UMD builds expose the globals playground.js uses.
        let graphiql = std::str::from_utf8(VENDORED[0].2).unwrap();
        assert!(graphiql.contains(".GraphiQL=") && graphiql.contains("e.React,e.ReactDOM"));
    }
}
