// A storefront page following "my orders" over graphql-ws in headless Chromium, while another tab
// of the same buyer places two orders; run by tests/api/live.rs.
//
//   node my-orders.mjs <api base url> <access token> <screenshot path>
//
// The page (served on the API's origin through Playwright's routing, so no CORS is involved)
// loads graphql-ws's browser build, subscribes to `myOrders`, and keeps a normalized cache: one
// entry per order `id`, merged with every update, rendered as a list. A second tab adds to the
// cart and places two orders with plain `fetch` calls. The check passes when the first tab's
// cache shows both orders CONFIRMED: prints "CONFIRMED <id> <id>", then DONE. Any failure exits
// non-zero with the reason (and a screenshot).
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const [base, token, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const TIMEOUT = 60_000;
const wsUrl = `${base.replace(/^http/, "ws")}/graphql/ws`;
// The browser build graphql-ws ships (not in its package exports, so by path).
const graphqlWsBrowserBuild = readFileSync(
  join(dirname(fileURLToPath(import.meta.url)), "node_modules/graphql-ws/umd/graphql-ws.min.js"),
  "utf8",
);

const storefront = `<!doctype html>
<html><head><meta charset="utf-8"><title>My orders</title>
<script src="/__storefront/graphql-ws.js"></script></head>
<body><h1>My orders</h1><ul id="orders"></ul>
<script>
  // The normalized cache: what a client like Apollo or urql keeps, by id.
  const cache = new Map();
  const list = document.getElementById("orders");
  function render() {
    list.replaceChildren(...[...cache.values()].map((o) => {
      const li = document.createElement("li");
      li.dataset.id = o.id;
      li.dataset.status = o.status;
      li.textContent = o.id + " " + o.status + " " + o.total.amount + " " + o.total.currencyCode;
      return li;
    }));
  }
  const client = graphqlWs.createClient({
    url: ${JSON.stringify(wsUrl)},
    connectionParams: { authorization: "Bearer " + ${JSON.stringify(token)} },
    on: { connected: () => { document.body.dataset.connected = "yes"; } },
  });
  client.subscribe(
    { query: "subscription MyOrders { myOrders { __typename id status total { amount currencyCode } updatedAt } }" },
    {
      next: (result) => {
        if (result.errors) { document.body.dataset.error = JSON.stringify(result.errors); return; }
        const order = result.data.myOrders;
        cache.set(order.id, { ...cache.get(order.id), ...order });
        render();
      },
      error: (e) => { document.body.dataset.error = String(e && (e.message || e.reason || e)); },
      complete: () => { document.body.dataset.completed = "yes"; },
    },
  );
</script></body></html>`;

const browser = await chromium.launch({
  executablePath,
  headless: true,
  // A document Playwright fulfils has no network address, so Chromium's Local Network Access
  // checks take it for a public page and block its connections to the API on loopback; a real
  // storefront is served from a host of its own.
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-features=LocalNetworkAccessChecks",
  ],
});
const context = await browser.newContext();
await context.route(`${base}/__storefront/**`, (route) => {
  const path = new URL(route.request().url()).pathname;
  if (path.endsWith("/graphql-ws.js")) {
    return route.fulfill({ contentType: "text/javascript", body: graphqlWsBrowserBuild });
  }
  return route.fulfill({ contentType: "text/html", body: path.endsWith("/tab.html") ? "<!doctype html><title>tab</title>" : storefront });
});
const page = await context.newPage();
page.setDefaultTimeout(TIMEOUT);
const problems = [];
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));

try {
  await page.goto(`${base}/__storefront/index.html`);
  await page.waitForSelector('body[data-connected="yes"]');

  // Another tab of the same buyer places two orders.
  const other = await context.newPage();
  await other.goto(`${base}/__storefront/tab.html`);
  const placed = await other.evaluate(async (token) => {
    const gql = async (query, variables) => {
      const res = await fetch("/graphql", {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify({ query, variables }),
      });
      const body = await res.json();
      if (body.errors) throw new Error(JSON.stringify(body.errors));
      return body.data;
    };
    const ids = [];
    for (const key of ["tab-a", "tab-b"]) {
      await gql('mutation { addToCart(sku: "MUG-001", quantity: 1) { userErrors { code } } }');
      const d = await gql(
        'mutation($k: String!) { placeOrder(idempotencyKey: $k, paymentToken: "tok_visa") { order { id } userErrors { code message } } }',
        { k: key },
      );
      if (d.placeOrder.userErrors.length) throw new Error(JSON.stringify(d.placeOrder.userErrors));
      ids.push(d.placeOrder.order.id);
    }
    return ids;
  }, token);

  await page.waitForFunction(
    (ids) =>
      document.body.dataset.error ||
      ids.every((id) => document.querySelector(`li[data-id="${id}"]`)?.dataset.status === "CONFIRMED"),
    placed,
  );
  const error = await page.evaluate(() => document.body.dataset.error);
  if (error) throw new Error(`subscription failed: ${error}`);
  if (problems.length) throw new Error(problems.join("\n"));
  await page.screenshot({ path: screenshot });
  console.log(`CONFIRMED ${placed.join(" ")}`);
  console.log("DONE");
} catch (e) {
  console.error(`my-orders check failed: ${e.message}${problems.length ? `\n${problems.join("\n")}` : ""}`);
  await page.screenshot({ path: screenshot }).catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
