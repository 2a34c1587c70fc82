// Breaking schema changes, as graphql-inspector judges them: compares two SDL files and fails on
// a change that breaks clients, unless it removes something the old schema had already
// deprecated (the deprecation period is how a field, enum value or input field goes away).
//
// usage: node schema-diff.mjs <old.graphql> <new.graphql> <label>
// Prints the breaking and dangerous changes and a count of all; exits 1 if one is breaking.
import { readFileSync } from "node:fs";

import { CriticalityLevel, diff, DiffRule } from "@graphql-inspector/core";
import { buildSchema } from "graphql";

const [oldPath, newPath, label] = process.argv.slice(2);
if (!oldPath || !newPath) throw new Error("usage: schema-diff.mjs <old.graphql> <new.graphql> <label>");
const load = (path) => buildSchema(readFileSync(path, "utf8"));
const changes = await diff(load(oldPath), load(newPath), [DiffRule.suppressRemovalOfDeprecatedField]);
let breaking = 0;
for (const c of changes) {
  const level = c.criticality.level;
  if (level === CriticalityLevel.Breaking) breaking += 1;
  if (level !== CriticalityLevel.NonBreaking) console.log(`${label}: ${level}: ${c.message}`);
}
console.log(`${label}: ${changes.length} changes, ${breaking} breaking`);
process.exit(breaking === 0 ? 0 : 1);
