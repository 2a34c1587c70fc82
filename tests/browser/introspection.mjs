// What schema-aware tools do with this API, done with graphql-js itself (the package GraphiQL,
// GraphQL Code Generator, Apollo and Relay build on). Run by tests/api/schema.rs.
//
//   node introspection.mjs query
//       prints getIntrospectionQuery() with every option graphql-js 16 offers: the text of
//       tests/fixtures/introspection-query.graphql (the Rust test checks they are equal)
//   node introspection.mjs compare <answer.json> <schema.graphql>
//       builds a client schema from the server's answer to that query (buildClientSchema, as
//       codegen does) and compares it with the committed SDL; prints SAME or the first difference
//       and exits non-zero
import { readFileSync } from "node:fs";
import {
  buildClientSchema,
  buildSchema,
  getIntrospectionQuery,
  lexicographicSortSchema,
  printSchema,
  version,
} from "graphql";

export const OPTIONS = {
  descriptions: true,
  specifiedByUrl: true,
  directiveIsRepeatable: true,
  schemaDescription: true,
  inputValueDeprecation: true,
  oneOf: true,
};

const [command, ...args] = process.argv.slice(2);

if (command === "query") {
  process.stdout.write(getIntrospectionQuery(OPTIONS));
} else if (command === "compare") {
  const [answerPath, sdlPath] = args;
  const answer = JSON.parse(readFileSync(answerPath, "utf8"));
  if (answer.errors) {
    console.error(`the server answered with errors: ${JSON.stringify(answer.errors)}`);
    process.exit(1);
  }
  // Both sides printed by graphql-js, types and fields in one order, so only meaning differs.
  const fromServer = printSchema(lexicographicSortSchema(buildClientSchema(answer.data)));
  const committed = printSchema(lexicographicSortSchema(buildSchema(readFileSync(sdlPath, "utf8"))));
  if (fromServer === committed) {
    console.log(`SAME (graphql ${version}, ${fromServer.length} characters of SDL)`);
  } else {
    const a = fromServer.split("\n");
    const b = committed.split("\n");
    const i = a.findIndex((line, n) => line !== b[n]);
    const at = i === -1 ? Math.min(a.length, b.length) : i;
    console.log(`DIFFERENT at line ${at + 1}:`);
    console.log(`  from the server: ${JSON.stringify(a.slice(Math.max(0, at - 2), at + 3))}`);
    console.log(`  committed:       ${JSON.stringify(b.slice(Math.max(0, at - 2), at + 3))}`);
    process.exit(1);
  }
} else {
  console.error("usage: node introspection.mjs query | compare <answer.json> <schema.graphql>");
  process.exit(2);
}
