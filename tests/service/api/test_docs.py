"""/docs and /redoc (service.api.docs): served with their assets from the service itself."""

from __future__ import annotations

from tests.service.api.conftest import serving


def test_docs_and_redoc_load_their_assets_from_the_service():
    import re

    with serving() as client:
        for page in ("/docs", "/redoc"):
            html = client.get(page)
            assert html.status_code == 200, page
            assert "default-src 'self'" in html.headers["content-security-policy"]  # nothing else reachable
            urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text) + re.findall(
                r"""url: ['"]([^'"]+)['"]""", html.text
            )
            assert urls, html.text
            external = [u for u in urls if u.startswith(("http:", "https:", "//"))]
            assert not external, (page, external)
            for u in urls:
                if u.startswith("/static/"):
                    asset = client.get(u)
                    assert asset.status_code == 200 and len(asset.content) > 1000, u
