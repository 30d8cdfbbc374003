// Build contacts.wasm from policy.js and write a bundle for it.
//   node build.mjs OUT_DIR
// Every WASI feature is disabled, so the component imports nothing and the host accepts it.
import { componentize } from "@bytecodealliance/componentize-js";
import { createHash } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, "dist"));
const source = await readFile(join(here, "policy.js"), "utf8");
const { component, imports } = await componentize(source, {
  witPath: join(here, "../../wit-0.1"), // contract 0.1.0, still served
  worldName: "policy",
  disableFeatures: ["stdio", "random", "clocks", "http", "fetch-event"],
});
if (imports.length > 0) {
  throw new Error(`the component imports ${JSON.stringify(imports)}; policies may import nothing`);
}
await mkdir(out, { recursive: true });
await writeFile(join(out, "contacts.wasm"), component);
const sha256 = createHash("sha256").update(component).digest("hex");
await writeFile(
  join(out, "bundle.yaml"),
  `apiVersion: tenancy.dev/v1
kind: PolicyBundle
metadata: { name: contacts-js }
policies:
  - name: contacts
    module: contacts.wasm
    sha256: "${sha256}"
    mode: enforce
    # The JavaScript engine needs more room than a Rust policy, to run and to compile
    # (~25 s of CPU and ~650 MiB once; the compiled module is cached).
    limits: { memoryMiB: 128, fuel: 2000000000, timeoutMs: 5000, compileMs: 90000, compileMiB: 1536 }
`,
);
console.log(`built ${join(out, "contacts.wasm")} (${component.length} bytes, sha256 ${sha256})`);
