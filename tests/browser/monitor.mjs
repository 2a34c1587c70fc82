// Drives the saga monitor in headless Chromium; run by tests/api/monitor.rs, which places the order.
//
//   node monitor.mjs <monitor url> <operator email> <buyer email> <password> <screenshot path>
//
// Protocol with the Rust test: prints READY once the page is live, then reads the order id from
// stdin, waits for that order's row to turn CONFIRMED (saga COMPLETED), opens its timeline and
// saves the screenshot. Then prints READY2, reads a second order id (a saga that will stop in
// NEEDS_ATTENTION), repairs it through the page (force compensate, with a reason, confirmed) and
// saves a second screenshot (<name>-repair.png); prints DONE. Any failure exits non-zero with the
// reason (and a screenshot of the failure).
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [url, operatorEmail, buyerEmail, password, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const TIMEOUT = 60_000;

const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 800 } });
page.setDefaultTimeout(TIMEOUT);
const problems = [];
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));

async function signIn(email) {
  await page.fill("#email", email);
  await page.fill("#password", password);
  await page.click("#sign-in");
}

try {
  await page.goto(url);

  // A buyer is turned away by the page (and the API would answer FORBIDDEN anyway).
  await signIn(buyerEmail);
  await page.waitForFunction(() => document.querySelector("#login-error").textContent.includes("operator role"));
  if (await page.isVisible("#monitor")) throw new Error("the monitor opened for a buyer");

  await signIn(operatorEmail);
  await page.waitForSelector('#connection[data-state="live"]');
  console.log("READY");

  const orderId = (await nextLine()).trim();
  const row = `#sagas tr[data-order-id="${orderId}"]`;
  // It appears through the subscription, no reload, while the (slow) payment is pending...
  await page.waitForSelector(`${row}[data-order-status="PENDING"]`);
  // ...and turns CONFIRMED when the saga completes.
  await page.waitForSelector(`${row}[data-order-status="CONFIRMED"]`);
  const status = await page.textContent(`${row} td.order-status`);
  if (status !== "CONFIRMED") throw new Error(`order status cell says ${status}`);
  const saga = await page.textContent(`${row} td.status`);
  if (saga !== "COMPLETED") throw new Error(`saga status cell says ${saga}`);

  await page.click(row);
  await page.waitForSelector('#timeline li[data-type="COMPLETED"]');
  const steps = await page.$$eval("#timeline li", (lis) => lis.map((li) => li.dataset.type));
  for (const want of ["ORDER_PLACED", "STOCK_RESERVED", "PAYMENT_AUTHORIZED", "PAYMENT_CAPTURED", "COMPLETED"]) {
    if (!steps.includes(want)) throw new Error(`timeline lacks ${want}: ${steps.join(", ")}`);
  }
  const durations = await page.$$eval("#timeline .took", (s) => s.slice(1).map((e) => e.textContent));
  if (!durations.every((d) => /^\+\d+(\.\d+)? m?s$/.test(d))) throw new Error(`durations: ${durations}`);
  if (problems.length) throw new Error(problems.join("\n"));

  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`TIMELINE ${steps.join(",")}`);

  // Repair: a saga that ran out of attempts shows up as NEEDS_ATTENTION; force-compensate it.
  console.log("READY2");
  const stuckOrder = (await nextLine()).trim();
  const stuck = `#sagas tr[data-order-id="${stuckOrder}"]`;
  await page.waitForSelector(`${stuck}[data-status="NEEDS_ATTENTION"]`);
  await page.waitForSelector('#attention[data-count="1"]');
  await page.click(stuck);
  await page.waitForFunction(() => document.querySelector("#detail-error").textContent.includes("no reply"));
  await page.click('#actions button[data-action="forceCompensateSaga"]');
  await page.waitForSelector("#confirm:not([hidden])");
  const question = await page.textContent("#confirm-question");
  // People read the order's database id (the one in logs and support requests), shown in the row.
  const stuckOrderNumber = await page.getAttribute(`${stuck} td.order`, "title");
  if (!stuckOrderNumber || !question.includes(stuckOrderNumber)) {
    throw new Error(`confirmation names the wrong order: ${question} (row: ${stuckOrderNumber})`);
  }
  // Nothing happens without the confirmation.
  if ((await page.getAttribute(stuck, "data-status")) !== "NEEDS_ATTENTION") throw new Error("acted before confirming");
  await page.fill("#confirm-reason", "customer asked to cancel (browser test)");
  await page.click("#confirm-yes");
  await page.waitForSelector(`${stuck}[data-order-status="CANCELLED"]`);
  await page.waitForSelector('#audit li[data-action="FORCE_COMPENSATE"]');
  await page.waitForSelector('#attention[data-count="0"]');
  const audit = await page.textContent('#audit li[data-action="FORCE_COMPENSATE"]');
  if (!audit.includes(operatorEmail) || !audit.includes("browser test")) throw new Error(`audit entry: ${audit}`);
  if (problems.length) throw new Error(problems.join("\n"));
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-repair.png"), fullPage: true });
  console.log("DONE");
  await browser.close();
  process.exit(0);
} catch (e) {
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-failed.png"), fullPage: true }).catch(() => {});
  console.error(`monitor check failed: ${e.message}\n${problems.join("\n")}`);
  await browser.close();
  process.exit(1);
}
