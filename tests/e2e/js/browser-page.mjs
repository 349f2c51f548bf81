// Open a page (served by the test on its own loopback origin) in headless Chromium and return
// what it computed: the page sets `window.result` to a promise of a JSON-able value.
// Input: one JSON argument {url, cdnUrl, screenshot}. Output: JSON on stdout {result, report}.
import { launch } from "./lib/chromium.mjs";
import { options } from "./lib/options.mjs";

const { url, cdnUrl, screenshot } = options();
const { page, report, close } = await launch({ cdnUrl });
try {
  const response = await page.goto(url, { waitUntil: "load" });
  report.status = response.status();
  const result = await page.evaluate(() => window.result);
  if (screenshot) {
    await page.screenshot({ path: screenshot, fullPage: true });
  }
  console.log(JSON.stringify({ result, report }));
} finally {
  await close();
}
