// GraphiQL in headless Chromium, as a developer uses it: open the page, paste a token into
// the Headers tab, run the default query. Env: C360_URL, TOKEN. Prints what the page sent,
// what it kept in storage and what it showed.
import { chromium } from "playwright-core";

const { C360_URL, TOKEN } = process.env;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
});
const out = { sent: [], statuses: [], consoleErrors: [] };
try {
  const page = await browser.newPage();
  page.on("request", (r) => {
    if (new URL(r.url()).pathname === "/graphql" && r.method() === "POST") {
      const body = r.postData() || "";
      out.sent.push({ auth: r.headers()["authorization"] || null, introspection: body.includes("__schema") });
    }
  });
  page.on("response", (r) => out.statuses.push([new URL(r.url()).pathname, r.status()]));
  page.on("console", (m) => m.type() === "error" && out.consoleErrors.push(m.text()));
  page.on("pageerror", (e) => out.consoleErrors.push(String(e)));
  page.on("pageerror", (e) => process.stderr.write("pageerror: " + String(e) + "\n"));
  await page.goto(`${C360_URL}/graphql`);
  await page.waitForSelector(".graphiql-container");
  await page.waitForTimeout(1500);
  out.sentBeforeToken = out.sent.length;
  // paste a token into the Headers editor (CodeMirror), as a person would
  await page.evaluate((token) => {
    const editors = [...document.querySelectorAll(".graphiql-editor-tool .CodeMirror")];
    const headers = editors.find((e) => e.CodeMirror.getValue().includes("Authorization"));
    headers.CodeMirror.setValue(JSON.stringify({ Authorization: `Bearer ${token}` }, null, 2));
  }, TOKEN);
  await page.waitForResponse((r) => new URL(r.url()).pathname === "/graphql" && r.status() === 200);
  await page.waitForTimeout(500);
  await page.click(".graphiql-execute-button");
  await page.waitForFunction(() => {
    const result = document.querySelector(".result-window .CodeMirror");
    return result && result.CodeMirror.getValue().includes("viewer");
  });
  out.result = JSON.parse(await page.evaluate(() => document.querySelector(".result-window .CodeMirror").CodeMirror.getValue()));
  out.localStorage = await page.evaluate(() => JSON.stringify(window.localStorage));
  out.localKeys = await page.evaluate(() => Object.keys(window.localStorage));
  out.sessionStorage = await page.evaluate(() => JSON.stringify(window.sessionStorage));
  out.favicon = (await page.request.get(`${C360_URL}/favicon.ico`)).status();
  out.iconLink = await page.evaluate(() => document.querySelector("link[rel=icon]").href);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + "\n");
