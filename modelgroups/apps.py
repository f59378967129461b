from django.apps import AppConfig


class ModelgroupsConfig(AppConfig):
    name = "modelgroups"
