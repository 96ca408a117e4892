// Loads the gateway's live page in a real browser and checks what it shows:
// trades and a book appear and change, the topics table agrees with the
// tape, after the feed is paused the page shows a gap, and a resume from
// another bus (a reset) is refused and the page follows the bus live. Saves a screenshot. Run by .ci/browser, which starts the
// gateway and the feed and passes:
//   GATEWAY_URL   the page, e.g. http://127.0.0.1:8080/
//   FEED_PIDS     space-separated pids of the publishers to pause (SIGSTOP)
//   CHROMIUM      the browser executable
//   SCREENSHOT    where to save the screenshot
import { chromium } from "playwright-core";

const url = process.env.GATEWAY_URL;
const fail = (msg) => { console.error("browser test: FAIL: " + msg); process.exit(1); };
if (!url) fail("GATEWAY_URL is not set");

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  page.on("pageerror", (e) => fail("page error: " + e.message));
  await page.goto(url);
  const firstTrade = () => page.$eval("#trades tr td", (td) => td.textContent).catch(() => null);
  const ladder = () => page.$eval("#ladder tbody", (b) => b.textContent).catch(() => "");
  await page.waitForSelector("#trades tr", { timeout: 10000 }).catch(() => fail("no trade appeared in 10 s"));
  await page.waitForFunction(() => document.querySelector("#ladder tbody").rows.length > 0, null, { timeout: 10000 })
    .catch(() => fail("no book appeared in 10 s"));
  const [t0, b0] = [await firstTrade(), await ladder()];
  await page.waitForFunction(([t, b]) =>
      document.querySelector("#trades tr td").textContent !== t
      && document.querySelector("#ladder tbody").textContent !== b,
    [t0, b0], { timeout: 10000 }).catch(() => fail("the trades or the book did not change in 10 s"));
  await page.waitForFunction(() => document.querySelector("#state").className === "live", null, { timeout: 5000 })
    .catch(() => fail("the page never showed the live state"));
  // The topics table agrees with the tape whenever one looks: its figure for
  // the last trade received is the tape's newest row (sampled while trades
  // flow), and the gateway's figure, from its heartbeat, says how old it is.
  const topics = () => page.evaluate(() => {
    const row = [...document.querySelectorAll("#rates tbody tr")]
      .find((r) => r.cells[0].textContent === "trade_events");
    return {
      tape: document.querySelector("#trades tr td").textContent,
      received: row ? row.cells[2].textContent : null,
      gateway: row ? row.cells[3].textContent : null,
    };
  });
  for (let i = 0; i < 10; i++) {
    const t = await topics();
    if (t.received !== t.tape) {
      fail("the topics table says the last trade received is " + t.received + ", the tape shows " + t.tape);
    }
    await page.waitForTimeout(150);
  }
  const t = await topics();
  if (!/^\d+ \(\d+(\.\d)? s ago\)$/.test(t.gateway)) {
    fail("the gateway's last seq does not say how old it is: \"" + t.gateway + "\"");
  }
  await page.waitForTimeout(1200); // a full rates tick for the screenshot
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT });
  // Pause the feed: the page must show a gap once trades stop past its window.
  for (const pid of (process.env.FEED_PIDS || "").split(" ").filter(Boolean)) process.kill(Number(pid), "SIGSTOP");
  await page.waitForFunction(() => document.querySelector("#state").className === "gap", null, { timeout: 10000 })
    .catch(() => fail("no gap shown 10 s after the feed was paused"));
  for (const pid of (process.env.FEED_PIDS || "").split(" ").filter(Boolean)) process.kill(Number(pid), "SIGCONT");
  // A reconnect whose resume counts in another bus (as after a bus reset:
  // the page remembers the segment the gateway named, here forged): the
  // gateway refuses it, and the page says so and follows the bus live.
  const named = await page.evaluate(() => busIds.trade_events);
  if (!/^[0-9a-f]{16}$/.test(named || "")) fail("the page kept no bus segment for trade_events: " + named);
  await page.evaluate(() => { busIds.trade_events = "0000000000000001"; ws.close(); });
  await page.waitForFunction(() => document.querySelector("#gaps").textContent.includes("the bus was reset"), null, { timeout: 10000 })
    .catch(() => fail("no reset shown after a resume from another bus"));
  const afterReset = await firstTrade();
  await page.waitForFunction((t) => document.querySelector("#trades tr td").textContent !== t, afterReset, { timeout: 10000 })
    .catch(() => fail("trades did not flow again after the reset"));
  const again = await page.evaluate(() => busIds.trade_events);
  if (again !== named) fail("after the reset the page kept segment " + again + ", the gateway's is " + named);
  console.log("browser test: ok (trades and book live and changing; topics table consistent with the tape; gap shown after the pause; a resume from another bus refused and followed live)");
} finally {
  await browser.close();
}
