// Drives the GraphQL playground (GraphiQL at GET /graphql) in headless Chromium with no network
// beyond loopback; run by tests/api/playground.rs.
//
//   node playground.mjs <playground url> <access token> <screenshot path>
//
// Protocol with the Rust test: runs `{ products { nodes { sku name } } }` and checks the answer in the result
// pane, opens the documentation explorer at Query, puts the token in the Headers tab and prints
// READY. Reads an order id from stdin, runs `orderEvents` for it from the playground and prints
// SUBSCRIBED <event type> once the first event is in the result pane; then waits until the
// compensation's last event (COMPENSATED) arrives, saves the screenshot and prints DONE. Any
// failure (including a request to anywhere but loopback, a page error or a failed asset) exits
// non-zero with the reason.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [url, token, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const TIMEOUT = 60_000;

const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));

const loopback = (u) => ["127.0.0.1", "localhost", "[::1]"].includes(new URL(u).hostname);

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    // Nothing but loopback resolves: a CDN reference cannot load even where there is internet.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
  ],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const problems = [];
// Every request must stay on loopback; anything else is refused and reported.
await context.route("**/*", (route) => {
  const u = route.request().url();
  if (u.startsWith("data:") || loopback(u)) return route.continue();
  problems.push(`request to ${u}`);
  return route.abort();
});
const page = await context.newPage();
page.setDefaultTimeout(TIMEOUT);
page.on("websocket", (ws) => loopback(ws.url()) || problems.push(`websocket to ${ws.url()}`));
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
page.on("response", (r) => r.status() >= 400 && problems.push(`${r.status()} for ${r.url()}`));

const editor = (selector) => `document.querySelector(${JSON.stringify(`${selector} .CodeMirror`)}).CodeMirror`;
// Sets the editor's text and waits until GraphiQL has parsed it (the tab takes the operation's
// name): GraphiQL decides between HTTP and the websocket from the parsed document, so running
// before it is parsed would send a subscription over HTTP.
async function setQuery(name, text) {
  await page.evaluate(`${editor(".graphiql-query-editor")}.setValue(${JSON.stringify(text)})`);
  await page.waitForSelector(`.graphiql-tab-active:has-text("${name}")`);
}
const result = () => page.evaluate(`${editor(".graphiql-response")}.getValue()`);
async function waitForResult(predicate, what) {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const text = await result();
    if (predicate(text)) return text;
    if (Date.now() > deadline) throw new Error(`no ${what} in the result pane; it shows:\n${text}`);
    await page.waitForTimeout(100);
  }
}
function check() {
  if (problems.length) throw new Error(problems.join("\n"));
}

try {
  await page.goto(url);
  await page.waitForSelector(".graphiql-query-editor .CodeMirror");

  // A query, typed into the editor and run with the execute button.
  await setQuery("Catalog", "query Catalog { products { nodes { sku name } } }");
  await page.click(".graphiql-execute-button");
  const products = JSON.parse(await waitForResult((t) => t.includes("MUG-001"), "catalog"));
  if (!products.data.products.nodes.some((p) => p.sku === "MUG-001" && p.name)) {
    throw new Error(`unexpected answer: ${JSON.stringify(products)}`);
  }

  // The documentation explorer knows the schema (from the standard introspection query).
  await page.click('[aria-label="Show Documentation Explorer"]');
  await page.click('.graphiql-doc-explorer a.graphiql-doc-explorer-type-name:text-is("Query")');
  await page.waitForSelector('.graphiql-doc-explorer-title:text-is("Query")');
  const fields = await page.$$eval(".graphiql-doc-explorer-field-name", (as) => as.map((a) => a.textContent));
  for (const want of ["products", "cart", "order", "orders"]) {
    if (!fields.includes(want)) throw new Error(`the explorer's Query lacks ${want}: ${fields.join(", ")}`);
  }

  // Signed in through the Headers tab; the token goes with HTTP requests and in connection_init.
  await page.click('.graphiql-editor-tools button:text-is("Headers")');
  await page.evaluate(
    `${editor(".graphiql-editor-tool .graphiql-editor:not(.hidden)")}.setValue(${JSON.stringify(
      JSON.stringify({ Authorization: `Bearer ${token}` }),
    )})`,
  );
  await setQuery("Me", "query Me { me { email } }");
  await page.click(".graphiql-execute-button");
  await waitForResult((t) => t.includes('"email"'), "signed-in answer");
  check();
  console.log("READY");

  // A subscription run from the playground: the order's events arrive in the result pane.
  const orderId = (await nextLine()).trim();
  await setQuery("FollowOrder", `subscription FollowOrder { orderEvents(orderId: "${orderId}") { sequence type } }`);
  await page.click(".graphiql-execute-button");
  const first = JSON.parse(await waitForResult((t) => t.includes('"orderEvents"') || t.includes('"errors"'), "event"));
  if (!first.data) throw new Error(`the subscription failed: ${JSON.stringify(first)}`);
  console.log(`SUBSCRIBED ${first.data.orderEvents.type}`);

  // The test cancels the order now; the compensation's events stream in until the last one.
  const last = JSON.parse(await waitForResult((t) => t.includes('"COMPENSATED"'), "COMPENSATED event"));
  if (last.data.orderEvents.sequence <= first.data.orderEvents.sequence) {
    throw new Error(`events out of order: ${JSON.stringify(first)} then ${JSON.stringify(last)}`);
  }
  check();
  await page.screenshot({ path: screenshot });
  console.log("DONE");
  await browser.close();
  lines.close();
} catch (e) {
  console.error(e.stack || String(e));
  if (problems.length) console.error(problems.join("\n"));
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-failed.png") }).catch(() => {});
  await browser.close();
  process.exit(1);
}
