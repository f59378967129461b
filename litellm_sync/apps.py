from django.apps import AppConfig


class LiteLLMSyncConfig(AppConfig):
    name = "litellm_sync"
    verbose_name = "LiteLLM integration"
