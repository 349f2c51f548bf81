// GraphiQL at /graphql in headless Chromium, used the way a person would: paste an operation
// into the query editor, its variables into the Variables pane and the Authorization header into
// the Headers pane (null: leave a pane alone), press Run, and watch the result pane. Every value
// the result pane shows is recorded in order, and a screenshot of the final state is saved.
// With `runAtOnce`, Run is pressed (Ctrl+Enter) right after the paste, before GraphiQL has
// re-parsed the editor, as a person who pastes and runs does.
// Input: one JSON argument {graphqlUrl, cdnUrl, query, variables, headers, until, screenshot,
// runAtOnce, previousQuery}; every request leaving loopback is aborted and reported.
// Output: JSON on stdout {variablesPane, headersPane, responses, visibleResponse, report}.
import { launch } from "./lib/chromium.mjs";
import { options } from "./lib/options.mjs";

const { graphqlUrl, cdnUrl, query, variables, headers, until, screenshot, runAtOnce, previousQuery } =
  options();
const { page, report, close } = await launch({ cdnUrl, offline: true });

function editor(selector) {
  return page.locator(`${selector} .CodeMirror`).first();
}

async function replaceText(selector, text) {
  await editor(selector).click();
  await page.keyboard.press("ControlOrMeta+A");
  await page.keyboard.insertText(text); // as a paste: no auto-closed brackets
}

try {
  const response = await page.goto(graphqlUrl, { waitUntil: "load" });
  report.status = response.status();
  report.csp = response.headers()["content-security-policy"] || null;
  await editor(".graphiql-query-editor").waitFor({ timeout: 15000 });

  // Record every value the result pane takes, as GraphiQL replaces it with each event.
  await page.evaluate(() => {
    const cm = document.querySelector(".graphiql-response .CodeMirror").CodeMirror;
    window.e2eResponses = [];
    cm.on("change", () => window.e2eResponses.push(cm.getValue()));
  });

  if (previousQuery) {
    // What the editor held before: GraphiQL has parsed it (its operation is the one named).
    await replaceText(".graphiql-query-editor", previousQuery);
    await page.locator("button.graphiql-execute-button:not([aria-haspopup])").waitFor();
  }
  if (!runAtOnce) {
    await replaceText(".graphiql-query-editor", query);
  }
  for (const [tab, text] of [
    ["Variables", variables],
    ["Headers", headers],
  ]) {
    if (text !== null) {
      await page.locator(".graphiql-editor-tools").getByRole("button", { name: tab }).click();
      await replaceText(".graphiql-editor-tool .graphiql-editor:not(.hidden)", text);
    }
  }
  // What the panes hold now (the Variables editor comes first, then Headers).
  const [variablesPane, headersPane] = await page.evaluate(() =>
    [...document.querySelectorAll(".graphiql-editor-tool .graphiql-editor")].map((pane) =>
      pane.querySelector(".CodeMirror").CodeMirror.getValue(),
    ),
  );

  if (runAtOnce) {
    await replaceText(".graphiql-query-editor", query);
    await page.keyboard.press("ControlOrMeta+Enter");
  } else {
    // GraphiQL re-parses the query shortly after an edit; until then it still sees the default
    // query's three operations, and Run would open a menu to choose one.
    await page.locator("button.graphiql-execute-button:not([aria-haspopup])").click();
  }
  await page.waitForFunction(
    (text) => window.e2eResponses.some((value) => value.includes(text)),
    until,
    { timeout: 20000 },
  );
  await page.waitForTimeout(200); // let the last render settle before the picture
  if (screenshot) {
    await page.screenshot({ path: screenshot, fullPage: true });
  }
  const result = {
    variablesPane,
    headersPane,
    responses: await page.evaluate(() => window.e2eResponses.filter((value) => value !== "")),
    visibleResponse: await page.locator(".graphiql-response").innerText(),
    report,
  };
  console.log(JSON.stringify(result));
} catch (error) {
  // What the page showed and logged, to tell why it failed.
  const responses = await page.evaluate(() => window.e2eResponses).catch(() => null);
  console.error(JSON.stringify({ report, responses }, null, 2));
  if (screenshot) {
    await page.screenshot({ path: screenshot.replace(/\.png$/, "-failed.png") }).catch(() => {});
  }
  throw error;
} finally {
  await close();
}
