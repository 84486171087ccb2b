// Builds the Customer360 tab into ../src/web (committed: a fresh clone needs no Node).
// Deterministic: the same locked packages and sources give the same bytes
// (tests/web/test_build.py rebuilds into a scratch folder and compares).
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] || join(here, "..", "src", "web"));
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, "src", "main.tsx")],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2020",
  jsx: "automatic",
  jsxImportSource: "preact",
  legalComments: "linked",
  outfile: join(out, "app.js"),
  define: { "process.env.NODE_ENV": '"production"' },
  logLevel: "warning",
});
for (const f of ["index.html", "app.css", "favicon.svg"]) copyFileSync(join(here, "public", f), join(out, f));
