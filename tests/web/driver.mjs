// Debian's Chromium driven by playwright-core (the copy locked in tests/clients), one JSON
// command per stdin line, one JSON answer per stdout line: tests/web/conftest.py is the caller.
//   {"id": 1, "op": "open", "page": "am"}                       a page in a context of its own
//   {"id": 2, "op": "call", "page": "am", "method": "goto", "args": [url]}   page[method](...args)
//   {"id": 3, "op": "eval", "page": "am", "fn": "(x) => ...", "arg": 1}
//   {"id": 4, "op": "problems", "page": "am"}                   console errors and page errors
//   {"id": 5, "op": "intercept", "page": "am", "match": "...", "before"?: {url, init},
//    "fulfill"?: {status, contentType, body}}                    the next matching POST
import { createRequire } from "node:module";
import { createInterface } from "node:readline";

const require = createRequire(new URL("../clients/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
  ],
});
const pages = new Map();
const problems = new Map();
const socketLogs = new Map(); // what each page's WebSockets did, for a failure's message

async function handle(cmd) {
  switch (cmd.op) {
    case "open": {
      const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
      const page = await context.newPage();
      const seen = [];
      page.on("console", (m) => m.type() === "error" && seen.push(`console: ${m.text()}`));
      page.on("pageerror", (e) => seen.push(`pageerror: ${e.message}`));
      const sockets = [];
      page.on("websocket", (ws) => {
        const log = [`${Date.now()} open ${ws.url()}`];
        sockets.push(log);
        ws.on("framesent", (f) => log.push(`${Date.now()} > ${String(f.payload).slice(0, 60)}`));
        ws.on("framereceived", (f) => log.push(`${Date.now()} < ${String(f.payload).slice(0, 60)}`));
        ws.on("socketerror", (e) => log.push(`${Date.now()} error ${e}`));
        ws.on("close", () => log.push(`${Date.now()} closed`));
      });
      socketLogs.set(cmd.page, sockets);
      pages.set(cmd.page, page);
      problems.set(cmd.page, seen);
      return null;
    }
    case "call": {
      const page = pages.get(cmd.page);
      const value = await page[cmd.method](...(cmd.args || []));
      return value === undefined || typeof value === "object" ? null : value;
    }
    case "eval":
      return await pages.get(cmd.page).evaluate(`(${cmd.fn})(${JSON.stringify(cmd.arg ?? null)})`);
    case "intercept": {
      // The next POST to /graphql whose body contains `match`: first `before` (a request
      // sent from here, e.g. someone else's write), then passed on, or answered `fulfill`.
      const page = pages.get(cmd.page);
      let used = false;
      const handler = async (route) => {
        const req = route.request();
        if (used || req.method() !== "POST" || !(req.postData() || "").includes(cmd.match)) {
          return route.fallback();
        }
        used = true;
        try {
          if (cmd.before) {
            const r = await fetch(cmd.before.url, cmd.before.init);
            if (!r.ok) throw new Error(`before: ${r.status} ${await r.text()}`);
          }
          if (cmd.fulfill) return await route.fulfill(cmd.fulfill);
          return await route.continue();
        } catch (e) {
          problems.get(cmd.page).push(`intercept: ${e}`);
          return route.abort().catch(() => {});
        }
      };
      await page.route("**/graphql", handler);
      return null;
    }
    case "close":
      await pages.get(cmd.page).context().close();
      pages.delete(cmd.page);
      return null;
    case "sockets":
      return socketLogs.get(cmd.page);
    case "problems":
      return problems.get(cmd.page).splice(0);
    case "quit":
      await browser.close();
      setTimeout(() => process.exit(0), 10);
      return null;
    default:
      throw new Error(`unknown op ${cmd.op}`);
  }
}

const out = (x) => process.stdout.write(JSON.stringify(x) + "\n");
out({ ready: true });
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const cmd = JSON.parse(line);
  handle(cmd).then(
    (value) => out({ id: cmd.id, ok: true, value }),
    (error) => out({ id: cmd.id, ok: false, error: String(error && error.stack || error) }),
  );
}
await browser.close();
