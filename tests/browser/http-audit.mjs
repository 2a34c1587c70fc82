// Audits a running API against the GraphQL over HTTP spec with graphql-http's own server audits
// (the reference implementation's conformance suite). Usage: node http-audit.mjs <url>.
// Prints one line per audit, `<status> <id> <name>`, then `ERRORS <n>`; exits non-zero when a
// MUST audit fails or any audit gets no answer within 10 s. Run by tests/api/transport.rs.
import { serverAudits } from "graphql-http";

const url = process.argv[2];
if (!url) {
  console.error("usage: node http-audit.mjs <graphql url>");
  process.exit(2);
}
const within = (ms, promise) =>
  Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms))]);
let errors = 0;
for (const audit of serverAudits({ url, fetchFn: fetch })) {
  let r;
  try {
    r = await within(10_000, audit.fn());
  } catch (e) {
    r = { id: audit.id, name: audit.name, status: "error", reason: String(e) };
  }
  if (r.status === "error") errors += 1;
  const why = r.status === "ok" ? "" : ` -- ${r.reason}`;
  console.log(`${r.status} ${r.id} ${r.name}${why}`);
}
console.log(`ERRORS ${errors}`);
process.exit(errors === 0 ? 0 : 1);
