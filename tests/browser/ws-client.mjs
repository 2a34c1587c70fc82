// A frontend's graphql-ws client following an order with an access token that has expired: the
// server closes the first connection with 4403 Forbidden, the client asks its connectionParams
// again (where a frontend refreshes its token), connects, and gets the order's events.
// Usage: node ws-client.mjs <ws url> <expired token> <fresh token> <order id>
// Prints `CLOSED <code>` for each closed connection, `EVENT <type>` for each event, `DONE`.
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [url, expired, fresh, orderId] = process.argv.slice(2);
let asked = 0;
const client = createClient({
  url,
  webSocketImpl: WebSocket,
  lazy: true,
  retryAttempts: 2,
  retryWait: async () => {},
  connectionParams: async () => {
    asked += 1;
    return { authorization: `Bearer ${asked === 1 ? expired : fresh}` };
  },
  on: { closed: (event) => console.log(`CLOSED ${event.code}`) },
});
const query = "subscription($id: ID!) { orderEvents(orderId: $id) { sequence type } }";
try {
  for await (const result of client.iterate({ query, variables: { id: orderId } })) {
    if (result.errors) throw new Error(JSON.stringify(result.errors));
    console.log(`EVENT ${result.data.orderEvents.type}`);
  }
  console.log("DONE");
} catch (e) {
  console.log(`FAILED ${e?.code ?? ""} ${e?.reason ?? e}`);
  process.exitCode = 1;
} finally {
  await client.dispose();
}
