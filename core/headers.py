"""Content-Security-Policy for every Django response (Django 5.2 has none built in).

HTML pages (the panel, Django's admin, error pages) load only this origin's scripts, styles,
images and connections: htmx and panel.js are files under /static/, and the templates carry no
inline script or event-handler attribute (style attributes are allowed: they cannot run code).
Everything else (the JSON API) may load nothing at all. Swagger UI (/api/docs/) loads its
bundle from a CDN with an inline bootstrap, so it keeps no policy of ours.
HSTS, nosniff and frame denial come from Django's SecurityMiddleware and
XFrameOptionsMiddleware (settings: HTTPS, X_FRAME_OPTIONS).
"""

PAGE_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    )
)
DATA_POLICY = "default-src 'none'; frame-ancestors 'none'"
NO_POLICY_PATHS = ("/api/docs/",)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "Content-Security-Policy" in response or request.path.startswith(NO_POLICY_PATHS):
            return response
        html = response.get("Content-Type", "").startswith("text/html")
        response["Content-Security-Policy"] = PAGE_POLICY if html else DATA_POLICY
        return response
