// The example storefront (examples/storefront) walked end to end in headless Chromium, as a buyer
// would: a guest cart that survives a reload, a sign-up refused by field and then made (the guest
// cart merged into the account's), a checkout whose address is refused by field and then
// confirmed live, a declined card cancelled with its reason (its units back in the live cart), and
// an order cancelled by the buyer.
// Run by tests/api/storefront.rs.
//
//   node storefront.mjs <api base url> <new account e-mail> <screenshot path>
//
// The page is served on the API's origin through Playwright's routing (so no CORS is involved),
// straight from examples/storefront with its node_modules, as scripts/dev.sh serves it. Prints a
// line per step ("GUEST 3", "MERGED 3", "CONFIRMED", "DECLINED PAYMENT_DECLINED",
// "CANCELLED CANCELLED_BY_USER"), then DONE; a screenshot of each step is kept beside the last
// one. Any failure exits non-zero with the reason (and a screenshot).
import { readFileSync } from "node:fs";
import { dirname, extname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const [base, email, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const TIMEOUT = 60_000;
const shop = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "examples", "storefront");
const types = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".graphql": "text/plain" };

// A document Playwright fulfils has no network address, so Chromium's Local Network Access checks
// take it for a public page and block its websocket to the API on loopback (as in my-orders.mjs).
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-features=LocalNetworkAccessChecks"],
});
const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
page.setDefaultTimeout(TIMEOUT);
const problems = [];
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
await page.route(`${base}/storefront/**`, (route) => {
  const path = new URL(route.request().url()).pathname.replace(/^\/storefront\//, "") || "index.html";
  if (path.includes("..")) return route.fulfill({ status: 404 });
  try {
    const body = readFileSync(join(shop, path));
    return route.fulfill({ status: 200, body, contentType: types[extname(path)] || "application/octet-stream" });
  } catch {
    return route.fulfill({ status: 404 });
  }
});

const shot = (name) => page.screenshot({ path: screenshot.replace(/\.png$/, `-${name}.png`), fullPage: true });
const text = (sel) => page.textContent(sel);
const waitText = (sel, want) =>
  page.waitForFunction(([s, w]) => document.querySelector(s)?.textContent?.includes(w), [sel, want]);
const orderEnds = (status) =>
  page.waitForFunction((s) => document.querySelector("#order-status")?.textContent === s, status);

try {
  await page.goto(`${base}/storefront/index.html`);
  await waitText("#status", "ready");
  if ((await page.locator("#products li").count()) < 5) throw new Error("the catalog did not load");

  // A guest cart, kept across a reload by its id.
  for (const sku of ["MUG-001", "MUG-001", "TEE-002"]) {
    await page.click(`button[data-sku="${sku}"]`);
    await page.waitForFunction(() => !document.querySelector("#status").textContent.includes("rror"));
  }
  await waitText("#cart-count", "3");
  await waitText("#cart-owner", "guest cart");
  await page.reload();
  await waitText("#status", "ready");
  await waitText("#cart-count", "3");
  console.log(`GUEST ${await text("#cart-count")}`);
  await shot("1-guest-cart");

  // Sign-up: a short password is shown at the password field; then the account, with the cart.
  await page.fill("#email", email);
  await page.fill("#password", "short");
  await page.click("#sign-up");
  await waitText('#auth [data-field="input.password"]', "PASSWORD_TOO_SHORT");
  await shot("2-sign-up-refused");
  await page.fill("#password", "correct horse battery");
  await page.click("#sign-up");
  await waitText("#who", email);
  await waitText("#cart-owner", "your account's cart");
  await waitText("#cart-count", "3");
  console.log(`MERGED ${await text("#cart-count")}`);

  // Checkout: a postal code with a character no postal code has is shown at its field.
  await page.fill("#name", "Ada Lovelace");
  await page.fill("#line1", "12 St James's Square");
  await page.fill("#city", "London");
  await page.fill("#postal", "SW1Y_4JH");
  await page.selectOption("#payment", "tok_visa");
  await page.click("#place");
  await waitText('#checkout [data-field="input.shippingAddress.postalCode"]', "INVALID_ADDRESS");
  await shot("3-address-refused");
  await page.fill("#postal", "SW1Y 4JH");
  await page.click("#place");
  await orderEnds("CONFIRMED");
  await waitText("#order-events", "COMPLETED");
  await waitText("#cart-count", "0");
  await waitText("#order-ship", "Ada Lovelace, London (GB)");
  console.log("CONFIRMED");
  await shot("4-confirmed");

  // A declined card: the order is cancelled, and the page says why.
  await page.click('button[data-sku="BAG-003"]');
  await waitText("#cart-count", "1");
  await page.selectOption("#payment", "tok_declined");
  await page.click("#place");
  await orderEnds("CANCELLED");
  await waitText("#order-reason", "PAYMENT_DECLINED");
  await waitText("#order-events", "COMPENSATED");
  console.log(`DECLINED ${await text("#order-reason")}`);
  // The cancelled order's units come back to the cart, and the page's live cart shows them.
  await waitText("#cart-count", "1");
  await waitText("#cart-lines", "Waxed canvas tote");
  await shot("5-declined");

  // The buyer cancels an order whose payment is still being authorized.
  await page.click('button[data-sku="PEN-004"]');
  await waitText("#cart-count", "2");
  await page.selectOption("#payment", "tok_timeout");
  await page.click("#place");
  await orderEnds("PENDING");
  await waitText("#order-events", "STOCK_RESERVED");
  await page.click("#cancel");
  await orderEnds("CANCELLED");
  await waitText("#order-reason", "CANCELLED_BY_USER");
  await waitText("#order-events", "COMPENSATED");
  console.log(`CANCELLED ${await text("#order-reason")}`);
  await page.screenshot({ path: screenshot, fullPage: true });
  if (problems.length) throw new Error(problems.join("\n"));
  console.log("DONE");
} catch (e) {
  await page.screenshot({ path: screenshot, fullPage: true }).catch(() => {});
  console.error(e.stack || String(e));
  console.error(problems.join("\n"));
  process.exitCode = 1;
} finally {
  await browser.close();
}
