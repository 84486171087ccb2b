// Headless Chromium (Debian's) opens PAGE and calls its window.run(GATEWAY, TOKEN, CUSTOMER);
// prints what the page reports. Env: PAGE, GATEWAY, TOKEN, CUSTOMER.
import { chromium } from "playwright-core";

const { PAGE, GATEWAY, TOKEN, CUSTOMER } = process.env;
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
try {
  const page = await browser.newPage();
  await page.goto(PAGE);
  const out = await page.evaluate(([g, t, c]) => window.run(g, t, c), [GATEWAY, TOKEN, CUSTOMER]);
  process.stdout.write(JSON.stringify(out) + "\n");
} finally {
  await browser.close();
}
