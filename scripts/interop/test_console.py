"""The admin console in a real browser (crates/warden/tests/console.rs).

Playwright drives Debian's Chromium (CHROMIUM, default /usr/bin/chromium; no browser is
downloaded) through every page of the console at WARDEN_CONSOLE_URL:

- when WARDEN_ADMIN_TOKEN is set, the page must ask for the token first, refuse a wrong one,
  and open with the right one (kept in sessionStorage, sent as a Bearer header);
- every page loads (Overview, Routes, Upstreams, Events, Authority, Config) and shows what
  the test's gateway has (WARDEN_EXPECT_ROUTE, the authority's signing key, the start in the
  reload history);
- a request refused by the gateway (WARDEN_REFUSED_URL, no token: 401) appears on the Events
  page while it is open, without reloading it;
- no console error, no uncaught exception and no Content-Security-Policy violation happens;
- a 1280x800 screenshot of each page goes to WARDEN_CONSOLE_SCREENSHOTS.

Exits 0 when all holds, 1 with every failure on stderr otherwise.
"""

import os
import sys
import urllib.error
import urllib.request

from playwright.sync_api import sync_playwright

PAGES = ["overview", "routes", "upstreams", "events", "authority", "config"]

# What each page must show once loaded (besides its title).
EXPECT = {
    "overview": lambda env: [env["WARDEN_EXPECT_ROUTE"], "Requests, last minute"],
    "routes": lambda env: [env["WARDEN_EXPECT_ROUTE"], "jwt:authority", "readers"],
    "upstreams": lambda env: ["healthy", "closed"],
    "events": lambda env: ["authn.failure"],
    "authority": lambda env: ["unsealed", "signing", "example.org"],
    "config": lambda env: ["started", "refused", "accepted", "Running config"],
}

CSP_PROBE = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + (e.blockedURI || "inline"));
});
"""


def refused_request(url):
    """A request the gateway refuses (no token): returns its status."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def main():
    env = os.environ
    url = env["WARDEN_CONSOLE_URL"]
    shots = env["WARDEN_CONSOLE_SCREENSHOTS"]
    token = env.get("WARDEN_ADMIN_TOKEN")
    os.makedirs(shots, exist_ok=True)
    failures = []
    errors = []

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=env.get("CHROMIUM", "/usr/bin/chromium"),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        # Registered through DevTools, so the page's CSP does not apply to it.
        context.add_init_script(CSP_PROBE)
        page = context.new_page()
        page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url} {r.failure}"))

        page.goto(url)
        if token:
            page.wait_for_selector("#token:not(.hidden)", timeout=10_000)
            if page.is_visible("#view"):
                failures.append("the data is shown before the token is given")
            page.screenshot(path=os.path.join(shots, "token.png"))
            page.fill("#token-input", "not-the-admin-token-0000")
            page.click("#token-save")
            page.wait_for_selector("#token-error:not(.hidden)", timeout=10_000)
            if "refused" not in page.inner_text("#token-error"):
                failures.append("a wrong token is not said to be refused")
            page.fill("#token-input", token)
            page.press("#token-input", "Enter")
            page.wait_for_selector("#token", state="hidden", timeout=10_000)
            stored = page.evaluate("sessionStorage.getItem('warden-admin-token')")
            if stored != token:
                failures.append("the token is not kept in sessionStorage")

        for name in PAGES:
            page.click(f"#nav a[data-page={name}]")
            page.wait_for_selector(f"#view[data-loaded={name}]", timeout=15_000)
            text = page.inner_text("#view")
            for want in EXPECT[name](env):
                if want not in text:
                    failures.append(f"page {name}: {want!r} not shown")
            if name == "events":
                live_event(page, env, failures)
            page.screenshot(path=os.path.join(shots, f"{name}.png"))

        violations = page.evaluate("window.__cspViolations")
        failures.extend(f"CSP violation: {v}" for v in violations)
        browser.close()

    failures.extend(errors)
    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    if failures:
        return 1
    print(f"console: {len(PAGES)} pages loaded, a live event arrived, screenshots in {shots}")
    return 0


def live_event(page, env, failures):
    """A refused request while the Events page is open shows up there by itself."""
    seen = page.eval_on_selector_all(
        "#events-body tr", "rows => Math.max(0, ...rows.map(r => Number(r.dataset.seq)))")
    status = refused_request(env["WARDEN_REFUSED_URL"])
    if status != 401:
        failures.append(f"the refused request got {status}, not 401")
        return
    try:
        page.wait_for_function(
            """([seen, route]) => [...document.querySelectorAll('#events-body tr')].some(r => {
                const cells = [...r.cells].map(c => c.textContent);
                return Number(r.dataset.seq) > seen && cells.includes('authn.failure')
                    && cells.includes('missing_credential') && cells.includes(route)
                    && cells.includes('401');
            })""",
            arg=[seen, env["WARDEN_EXPECT_ROUTE"]],
            timeout=10_000,
        )
    except Exception as e:  # noqa: BLE001 - reported, and the script fails
        failures.append(f"the refused request's event did not appear live: {e}")


if __name__ == "__main__":
    sys.exit(main())
