"""Write the HTML template `dvc plots show` uses in this checkout, with Vega, Vega-Lite and Vega-Embed inline.

DVC's default page loads those three libraries from a CDN, so offline it stays blank. `.dvc/config` names
this template (`plots.html_template`); `make install` writes it from the bundle that vl-convert-python ships
(`vl_convert.javascript_bundle`, a classic script that defines `vegaEmbed`, `vega` and `vegaLite` on
`window`), so the page `dvc plots show` writes (`dvc_plots/index.html`) renders with no network.

    python scripts/offline_plots_template.py [.dvc/plots/offline.html]
"""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT = Path(".dvc") / "plots" / "offline.html"
EXPOSE = "window.vegaEmbed = vegaEmbed; window.vega = vega; window.vegaLite = vegaLite;"


def template(bundle: str) -> str:
    """DVC's page with `bundle` inline in place of its `{scripts}` (the CDN tags); `{plot_divs}` stays."""
    script = bundle.replace("</script", "<\\/script")  # the bundle must not close its own tag
    return ("<!DOCTYPE html>\n<html>\n<head>\n    {refresh_tag}\n    <meta charset=\"utf-8\">\n"
            "    <title>DVC Plot</title>\n    <script type=\"text/javascript\">\n" + script + "\n    </script>\n"
            "    <style>table { border-spacing: 15px; }</style>\n</head>\n<body>\n    {plot_divs}\n</body>\n</html>\n")


def main(out: Path = DEFAULT) -> None:
    import vl_convert

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(template(vl_convert.javascript_bundle(EXPOSE)), encoding="utf-8")
    print(f"offline plots template (vega {vl_convert.get_vega_version()}) -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
