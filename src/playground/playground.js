// Starts GraphiQL (served from this API, no CDN) against this API's endpoints. Headers set in
// GraphiQL's headers editor (e.g. {"Authorization": "Bearer <accessToken>"}) go with every HTTP
// request and, for subscriptions, in the graphql-transport-ws `connection_init` payload, which is
// where the API reads the token of a websocket.
(function () {
  "use strict";
  const root = document.getElementById("graphiql");
  const url = new URL(root.dataset.endpoint, window.location.href);
  const subscriptions = new URL(root.dataset.subscriptions, window.location.href);
  subscriptions.protocol = subscriptions.protocol === "https:" ? "wss:" : "ws:";
  const fetcher = GraphiQL.createFetcher({
    url: url.toString(),
    subscriptionUrl: subscriptions.toString(),
  });
  const defaultQuery = [
    "# The catalog needs no sign-in:",
    "{",
    "  products(first: 5) {",
    "    nodes {",
    "      id",
    "      sku",
    "      name",
    "      price { amount currencyCode }",
    "      stockLevel",
    "    }",
    "    pageInfo { hasNextPage endCursor }",
    "  }",
    "}",
    "",
    "# Signed in (register or login)? Put the access token",
    "# in the Headers tab below:",
    '#   {"Authorization": "Bearer <accessToken>"}',
    "# It goes with queries, mutations and subscriptions.",
    "",
  ].join("\n");
  ReactDOM.createRoot(root).render(
    React.createElement(GraphiQL, { fetcher, defaultQuery, defaultEditorToolsVisibility: true }),
  );
})();
