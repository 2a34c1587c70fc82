// What a frontend's graphql-ws client (the npm package) makes of the server's connection limits
// and keep-alive. Connection A follows the buyer's cart and keeps answering the server's pings
// (graphql-ws does by itself) past the pong timeout; connection B, the same buyer's second
// while only one is allowed, is closed with 1013 (try again later) and retries, and gets in once
// A is gone.
// Usage: node ws-limits.mjs <ws url> <token> <ms to hold A>
// Prints `A CART <n>`, `A PINGS <n>` (pings received while held), `A CLOSED <code>` if A was
// closed while held, `B CLOSED <code>` for each refusal, `B CART <n>`, `DONE`.
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [url, token, holdMs] = process.argv.slice(2);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const query = "subscription { myCart { itemCount } }";
const connectionParams = { authorization: `Bearer ${token}` };

let pings = 0;
let holding = true;
const a = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams,
  retryAttempts: 0,
  on: {
    ping: (received) => {
      if (received) pings += 1;
    },
    closed: (event) => {
      if (holding) console.log(`A CLOSED ${event.code}`);
    },
  },
});
let refusedOnce;
const refused = new Promise((resolve) => (refusedOnce = resolve));
const b = createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams,
  lazy: true,
  retryAttempts: 50,
  retryWait: () => sleep(100),
  on: {
    closed: (event) => {
      console.log(`B CLOSED ${event.code}`);
      refusedOnce();
    },
  },
});
try {
  const cartA = a.iterate({ query });
  const first = await cartA.next();
  if (first.value.errors) throw new Error(JSON.stringify(first.value.errors));
  console.log(`A CART ${first.value.data.myCart.itemCount}`);
  await sleep(Number(holdMs));
  console.log(`A PINGS ${pings}`);

  const cartB = b.iterate({ query });
  const got = cartB.next();
  await refused;
  holding = false;
  await cartA.return();
  await a.dispose();
  const next = await got;
  if (next.value.errors) throw new Error(JSON.stringify(next.value.errors));
  console.log(`B CART ${next.value.data.myCart.itemCount}`);
  await cartB.return();
  console.log("DONE");
} catch (e) {
  console.log(`FAILED ${e?.code ?? ""} ${e?.reason ?? e?.message ?? e}`);
  process.exitCode = 1;
} finally {
  await a.dispose();
  await b.dispose();
}
