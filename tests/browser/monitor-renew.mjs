// The saga monitor across access-token expiry, in headless Chromium; run by tests/api/monitor.rs
// with a short ACCESS_TOKEN_TTL_SECS.
//
//   node monitor-renew.mjs <monitor url> <operator email> <password> <hold ms> <screenshot path>
//
// Signs in, prints READY once live, stays <hold ms> (several token lifetimes), then prints
// `RENEWED <n>` (how many different access tokens the page used) and reads an order id from stdin:
// the order must appear through the subscription, and the page must still be live. Prints DONE.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [url, operatorEmail, password, holdMs, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 800 } });
page.setDefaultTimeout(60_000);
const problems = [];
page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));

try {
  await page.goto(url);
  await page.fill("#email", operatorEmail);
  await page.fill("#password", password);
  await page.click("#sign-in");
  await page.waitForSelector('#connection[data-state="live"]');
  console.log("READY");

  const tokens = new Set();
  const until = Date.now() + Number(holdMs);
  while (Date.now() < until) {
    tokens.add(await page.evaluate(() => state.token));
    await page.waitForTimeout(250);
  }
  console.log(`RENEWED ${tokens.size}`);
  if (await page.isVisible("#login")) throw new Error("the page signed out");

  const orderId = (await nextLine()).trim();
  await page.waitForSelector(`#sagas tr[data-order-id="${orderId}"]`);
  await page.waitForSelector('#connection[data-state="live"]');
  if (problems.length) throw new Error(problems.join("\n"));
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log("DONE");
  await browser.close();
  process.exit(0);
} catch (e) {
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-failed.png"), fullPage: true }).catch(() => {});
  console.error(`monitor renewal check failed: ${e.message}\n${problems.join("\n")}`);
  await browser.close();
  process.exit(1);
}
