// Headless Debian Chromium driven by playwright-core, with the npm CDN served from node_modules.
//
// Never a downloaded browser: the system's /usr/bin/chromium, a fresh profile per launch.
// Requests to the CDN base URL (`{cdn}/{package}@{version}/{file}`) are answered from the same
// npm packages installed here, refused when the installed version differs; the pages' SRI hashes
// then prove the files are the ones the CDN serves. Any other request that leaves the loopback
// interface is aborted and reported.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, extname, join } from "node:path";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const CONTENT_TYPES = {
  ".js": "application/javascript; charset=utf-8",
  ".mjs": "application/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
};

export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

function packageRoot(name) {
  return dirname(require.resolve(`${name}/package.json`));
}

async function cdnFile(cdnUrl, url) {
  const path = url.slice(cdnUrl.replace(/\/$/, "").length + 1);
  const match = /^((?:@[^/]+\/)?[^@/]+)@([^/]+)\/(.+)$/.exec(path);
  if (!match) {
    return { error: `not an npm CDN path: ${path}` };
  }
  const [, name, version, file] = match;
  let root;
  try {
    root = packageRoot(name);
  } catch {
    return { error: `${name} is not installed in tests/e2e/js` };
  }
  const installed = JSON.parse(await readFile(join(root, "package.json"), "utf8")).version;
  if (installed !== version) {
    return { error: `${name}@${version} requested, ${installed} installed` };
  }
  return { name, version, file, body: await readFile(join(root, file)) };
}

function isLoopback(url) {
  const { protocol, hostname } = new URL(url);
  if (protocol === "data:" || protocol === "blob:" || protocol === "about:") {
    return true;
  }
  return hostname === "127.0.0.1" || hostname === "localhost" || hostname === "[::1]";
}

async function serveFromNodeModules(route, cdnUrl, url, report) {
  const file = await cdnFile(cdnUrl, url);
  if (file.error) {
    report.cdnRefused.push({ url, error: file.error });
    await route.fulfill({ status: 404, body: file.error });
    return;
  }
  report.cdnServed.push(url);
  await route.fulfill({
    status: 200,
    body: file.body,
    headers: {
      "content-type": CONTENT_TYPES[extname(file.file)] || "application/octet-stream",
      "access-control-allow-origin": "*", // as the CDN answers: SRI needs a CORS response
    },
  });
}

/**
 * Launch Chromium with a fresh profile; returns { context, page, report, close }.
 * With `cdnUrl`, requests to it are answered from node_modules; with `cdnUrl` or `offline`,
 * every other request that would leave loopback is aborted (and reported in `external`).
 */
export async function launch({ cdnUrl, offline = false }) {
  const profile = await mkdtemp(join(tmpdir(), "e2e-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1400, height: 900 },
  });
  const report = {
    cdnServed: [],
    cdnRefused: [],
    external: [], // requests that would leave loopback (aborted, or failing: no network)
    console: [],
    pageErrors: [],
    websockets: [],
    requests: [], // method and URL of every request the page made, in order
  };
  // While Playwright intercepts requests it answers CORS preflights itself, allowing anything,
  // which would hide the API's own CORS answers: pages that call the API cross-origin are opened
  // without interception (no cdnUrl), and then requests leaving loopback are only reported.
  if (cdnUrl || offline) {
    await context.route(
      (url) => !isLoopback(url.href),
      async (route) => {
        const url = route.request().url();
        if (cdnUrl && url.startsWith(cdnUrl)) {
          await serveFromNodeModules(route, cdnUrl, url, report);
          return;
        }
        await route.abort("blockedbyclient");
      },
    );
  }
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (message) => {
    if (message.type() === "error" || message.type() === "warning") {
      report.console.push(`${message.type()}: ${message.text()}`);
    }
  });
  page.on("request", (request) => {
    const url = request.url();
    report.requests.push(`${request.method()} ${url}`);
    if (!isLoopback(url) && !(cdnUrl && url.startsWith(cdnUrl))) {
      report.external.push(url);
    }
  });
  page.on("pageerror", (error) => report.pageErrors.push(String(error)));
  page.on("websocket", (socket) => {
    const entry = { url: socket.url(), sent: [], received: [], closed: false };
    report.websockets.push(entry);
    socket.on("framesent", (frame) => entry.sent.push(String(frame.payload)));
    socket.on("framereceived", (frame) => entry.received.push(String(frame.payload)));
    socket.on("close", () => (entry.closed = true));
  });
  const close = async () => {
    await context.close();
    await rm(profile, { recursive: true, force: true });
  };
  return { context, page, report, close };
}

