// GraphQL Code Generator as a frontend team runs it: types for the operations in
// operations.graphql, generated once from the running server (codegen introspects its URL) and
// once from the committed SDL; the two files must be byte for byte the same. Then `tsc` compiles
// client.ts, a tiny typed client, against them, and neither may use `any`.
//
// usage: node codegen/run.mjs <graphql-http-url> <schema.graphql>
// Prints "IDENTICAL <bytes>" and "TSC OK"; exits non-zero with the reason otherwise.
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { generate } from "@graphql-codegen/cli";

const here = dirname(fileURLToPath(import.meta.url));
const [url, sdl] = process.argv.slice(2);
if (!url || !sdl) throw new Error("usage: run.mjs <graphql-url> <schema.graphql>");

const config = (schema) => ({
  schema,
  documents: [join(here, "operations.graphql")],
  silent: true,
  generates: {
    "generated.ts": {
      plugins: ["typescript-operations", "typed-document-node"],
      config: {
        // Every custom scalar must be mapped: an unmapped one would be `any`.
        strictScalars: true,
        scalars: { DateTime: "string", JSON: "unknown" },
        enumsAsTypes: true,
        useTypeImports: true,
      },
    },
  },
});

function same(what, a, b) {
  if (a === b) return;
  const x = a.split("\n");
  const y = b.split("\n");
  const at = x.findIndex((line, i) => line !== y[i]);
  throw new Error(`${what} differ at line ${at + 1}:\n< ${x[at]}\n> ${y[at]}`);
}
const code = (text) => text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");

const [fromUrl] = await generate(config(url), false);
const [fromSdl] = await generate(config(sdl), false);
same("the files generated from the server and from the SDL", fromUrl.content, fromSdl.content);
console.log(`IDENTICAL ${fromUrl.content.length}`);

// No `any` in what the frontend compiles (comments aside).
const client = join(here, "client.ts");
for (const [name, text] of [
  ["generated.ts", fromUrl.content],
  ["client.ts", readFileSync(client, "utf8")],
]) {
  const line = code(text).split("\n").find((l) => /\bany\b/.test(l));
  if (line !== undefined) throw new Error(`${name} uses any: ${line.trim()}`);
}

// Compile in a scratch directory that resolves packages from this one's node_modules.
const work = mkdtempSync(join(tmpdir(), "codegen-"));
try {
  symlinkSync(join(here, "..", "node_modules"), join(work, "node_modules"), "dir");
  writeFileSync(join(work, "package.json"), JSON.stringify({ type: "module" }));
  writeFileSync(join(work, "generated.ts"), fromUrl.content);
  copyFileSync(client, join(work, "client.ts"));
  copyFileSync(join(here, "tsconfig.json"), join(work, "tsconfig.json"));
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  const run = spawnSync(process.execPath, [tsc, "-p", join(work, "tsconfig.json")], { encoding: "utf8" });
  if (run.status !== 0) throw new Error(`tsc failed:\n${run.stdout}${run.stderr}`);
  console.log("TSC OK");
} finally {
  rmSync(work, { recursive: true, force: true });
}
