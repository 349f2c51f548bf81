// Swagger UI at /docs in headless Chromium, used as a person would: Authorize with a token in
// the bearer scheme, open a protected operation, "Try it out", "Execute", and read the response
// Swagger UI shows. Every request that would leave loopback is aborted and reported.
// Input: one JSON argument {docsUrl, token, operation: "GET /api/v1/auth/me", screenshot}.
// Output: JSON on stdout {status, body, curl, report}.
import { launch } from "./lib/chromium.mjs";
import { options } from "./lib/options.mjs";

const { docsUrl, token, operation, screenshot } = options();
const { page, report, close } = await launch({ cdnUrl: null, offline: true });
const [method, path] = operation.split(" ");

try {
  const response = await page.goto(docsUrl, { waitUntil: "load" });
  report.status = response.status();
  report.csp = response.headers()["content-security-policy"] || null;

  await page.getByRole("button", { name: "Authorize" }).first().click();
  const dialog = page.locator(".modal-ux");
  const bearer = dialog.locator("form").filter({ hasText: "(http, Bearer)" });
  await bearer.locator("input").fill(token);
  await bearer.locator("button.authorize").click(); // labelled "Apply credentials"
  await bearer.locator("button.btn-done").click(); // "Close"

  const block = page.locator(`.opblock-${method.toLowerCase()}`).filter({
    has: page.locator(`.opblock-summary-path[data-path="${path}"]`),
  });
  await block.locator(".opblock-summary").click();
  await block.getByRole("button", { name: "Try it out" }).click();
  await block.getByRole("button", { name: "Execute" }).click();
  const live = block.locator(".responses-wrapper .live-responses-table");
  await live.locator("tbody .response-col_status").first().waitFor({ timeout: 15000 });
  const result = {
    status: (await live.locator("tbody .response-col_status").first().innerText()).trim(),
    body: await live.locator("tbody .response-col_description pre").first().innerText(),
    curl: await block.locator(".curl-command pre, .curl").first().innerText(),
    report,
  };
  if (screenshot) {
    await page.screenshot({ path: screenshot, fullPage: true });
  }
  console.log(JSON.stringify(result));
} catch (error) {
  console.error(JSON.stringify({ report }, null, 2));
  if (screenshot) {
    await page.screenshot({ path: screenshot.replace(/\.png$/, "-failed.png") }).catch(() => {});
  }
  throw error;
} finally {
  await close();
}
