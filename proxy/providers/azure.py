"""Azure OpenAI upstreams: the OpenAI APIs per deployment, the key in an `api-key` header.

`{base}/openai/deployments/{deployment}/{path}?api-version={version}`, where the base URL is
the resource's endpoint (https://<resource>.openai.azure.com, no /v1), the deployment is the
model's upstream model name and the version is the upstream's api_version. Azure has no
moderations endpoint: moderation models are not routed to it.
"""

from urllib.parse import quote

from proxy.providers.openai import PATHS, Provider

AZURE_PATHS = {api: path for api, path in PATHS.items() if api != "moderation"}


class Azure(Provider):
    kind = "azure_openai"

    def url(self, route, api: str) -> str:
        deployment = quote(route.upstream_model, safe="")
        version = quote(route.api_version, safe="")
        path = self.paths[api]
        return f"{route.url_base}/openai/deployments/{deployment}{path}?api-version={version}"

    def headers(self, route, call) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "X-Request-Id": call.rid}
        if route.auth_key:
            headers["api-key"] = route.auth_key
        return headers


AZURE = Azure(AZURE_PATHS)
