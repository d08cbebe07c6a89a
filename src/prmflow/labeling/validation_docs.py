"""Great Expectations data docs that open offline and are byte-identical for the same data.

GX 1.24 writes pages that load Bootstrap, jQuery, bootstrap-table, Vega and Font Awesome from
CDNs (unstyled, and the index's table of validations empty, without a network), names each
validation page's folder after the run's time (`validations/rollouts/__none__/20261130T105445.978095Z/`),
and stamps that time, a cache-busting `?d=<time>` and fresh UUIDs into the HTML, so the DVC hash
of `reports/validation_docs` changed on every run. `make_offline` rewrites the site GX wrote:

- every `<script>` and every stylesheet or image URL pointing off the machine goes; a short
  stylesheet (`OFFLINE_CSS`) inlined in each page stands in for the Bootstrap rules the pages use;
  GX's own styles are already inline and its images and fonts are local under `static/`;
- the run's folder becomes `latest`, run times and run ids read `latest` (the time of the run is
  the validate stage's MLflow run), and UUIDs become their order of appearance in the page;
- `index.html` (GX fills its table with JavaScript) is written here as plain HTML from the results.
"""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

RUN_FOLDER = "latest"
_RUN_STAMP = re.compile(r"\d{8}T\d{6}\.\d{6}Z")                                     # GX run ids / folders
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z| UTC|[+-]\d{2}:\d{2})?")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>\s*", re.DOTALL | re.IGNORECASE)
_REMOTE_LINK = re.compile(r"<link\b[^>]*href=\"https?://[^\"]*\"[^>]*>\s*", re.IGNORECASE)
_REMOTE_IMAGE = re.compile(r"<img\b[^>]*src=\"https?://[^\"]*\"[^>]*>", re.IGNORECASE | re.DOTALL)
_REMOTE_CSS_URL = re.compile(r"url\(\s*['\"]?https?://[^)]*\)", re.IGNORECASE)
_STATIC_REF = re.compile(r"(?<=\")(?:\.\./)*static/")  # GX's validation pages point one folder short

# The Bootstrap 4 rules GX's pages lean on, much reduced; icons are Unicode marks in place of Font Awesome.
OFFLINE_CSS = """
body { font-family: system-ui, sans-serif; margin: 0; color: #222; }
.container-fluid, .container { padding: 1rem 2rem; }
.row { display: flex; flex-wrap: wrap; }
.col-lg-2, .col-md-2 { flex: 0 0 16%; max-width: 16%; }
.col-md-10, .col-lg-10 { flex: 0 0 82%; max-width: 82%; }
.col-12, .col-6 { flex: 0 0 100%; }
.table { border-collapse: collapse; width: 100%; margin-bottom: 1rem; }
.table td, .table th { border-top: 1px solid #dee2e6; padding: .3rem .5rem; text-align: left; vertical-align: top; }
.card { border: 1px solid #dee2e6; border-radius: .25rem; margin-bottom: 1rem; }
.card-header { background: #f7f7f7; border-bottom: 1px solid #dee2e6; }
.card-body, .card-header { padding: .5rem 1rem; }
.alert { padding: .5rem 1rem; background: #e2e3e5; border-radius: .25rem; }
.badge { display: inline-block; padding: .1rem .4rem; border-radius: .25rem; background: #6c757d; color: #fff; }
.nav, .breadcrumb { list-style: none; padding-left: 0; }
.d-none, .navbar-toggler { display: none; }
.d-sm-block, .d-md-block { display: block; }
.d-md-inline-flex { display: inline-flex; }  /* wide-screen rules win: docs are read on a desktop */
.text-success, .success { color: #28a745; }
.text-danger, .failed { color: #dc3545; }
.text-warning { color: #b8860b; }
.fa-check-circle::before { content: "\\2714"; }
.fa-times::before, .fa-times-circle::before { content: "\\2718"; }
.fa-exclamation-triangle::before { content: "\\26A0"; }
"""


def _stable_ids(page: str) -> str:
    """Each UUID replaced by its order of first appearance, so ids and the hrefs naming them still pair up."""
    order: dict[str, str] = {}
    return _UUID.sub(lambda match: order.setdefault(match.group(0), f"id{len(order) + 1}"), page)


def offline_page(page: str, depth: int) -> str:
    """One GX page, `depth` folders below the site's root, without remote assets, scripts, run times or random ids."""
    page = _STATIC_REF.sub("../" * depth + "static/", page)
    page = _SCRIPT.sub("", page)
    page = _REMOTE_LINK.sub("", page)
    page = _REMOTE_IMAGE.sub("", page)
    page = _REMOTE_CSS_URL.sub("none", page)
    page = _RUN_STAMP.sub(RUN_FOLDER, page)
    page = _DATETIME.sub(RUN_FOLDER, page)
    page = _stable_ids(page)
    return page.replace("</head>", f"<style>{OFFLINE_CSS}</style>\n</head>", 1)


def _index(results: list[dict], pages: dict[str, str]) -> str:
    """The site's front page: per suite its verdict, check counts and links (GX's index needs JavaScript)."""
    rows = []
    for suite in dict.fromkeys(r["suite"] for r in results):
        checks = [r for r in results if r["suite"] == suite]
        failed = sum(not r["success"] and r["severity"] == "critical" for r in checks)
        warned = sum(not r["success"] and r["severity"] == "warning" for r in checks)
        verdict = ('<span class="failed">failed</span>' if failed else '<span class="success">passed</span>')
        name = html.escape(suite)
        rows.append(f"<tr><td>{name}</td><td>{verdict}</td><td>{len(checks) - failed - warned}</td><td>{failed}</td>"
                    f"<td>{warned}</td><td><a href=\"{html.escape(pages.get(suite, ''))}\">validation results</a></td>"
                    f"<td><a href=\"expectations/{name}.html\">expectation suite</a></td></tr>")
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"UTF-8\">\n<title>prmflow data validation</title>\n"
            f"<link rel=\"shortcut icon\" href=\"static/images/favicon.ico\" type=\"image/x-icon\"/>\n"
            f"<style>{OFFLINE_CSS}</style>\n</head>\n<body>\n<div class=\"container\">\n"
            "<h1>prmflow data validation</h1>\n<p>Great Expectations suites of the validate stage "
            "(reports/validation.json holds the same verdicts with example rows).</p>\n"
            "<table class=\"table\">\n<tr><th>suite</th><th>result</th><th>passed</th><th>failed</th>"
            "<th>warnings</th><th></th><th></th></tr>\n" + "\n".join(rows) + "\n</table>\n</div>\n</body>\n</html>\n")


def make_offline(docs_dir: Path, results: list[dict]) -> None:
    """Rewrite the GX site in `docs_dir` in place: local assets only, stable names and content.

    `results` are run_suites' rows (suite, success, severity). Expects GX's layout
    `validations/<suite>/<run name>/<run time>/<page>.html`; raises FileNotFoundError when a
    suite in `results` has no validation page.
    """
    pages = {}
    for page in sorted(docs_dir.glob("validations/*/*/*/*.html")):
        run_folder = page.parent
        stable = run_folder.with_name(RUN_FOLDER)
        if run_folder != stable:
            shutil.rmtree(stable, ignore_errors=True)
            run_folder.rename(stable)
        pages[page.relative_to(docs_dir).parts[1]] = (stable / page.name).relative_to(docs_dir).as_posix()
    missing = {r["suite"] for r in results} - pages.keys()
    if missing:
        raise FileNotFoundError(f"{docs_dir}: no validation page for suite(s) {sorted(missing)}")
    for path in sorted(docs_dir.rglob("*.html")):
        depth = len(path.relative_to(docs_dir).parts) - 1
        path.write_text(offline_page(path.read_text(encoding="utf-8"), depth), encoding="utf-8")
    (docs_dir / "index.html").write_text(_index(results, pages), encoding="utf-8")
