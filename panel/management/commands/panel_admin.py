"""Make sure the panel has a first admin; print how to log in.

A password is generated only when the admin is created and printed that once: only its hash
is stored, so it is in no file. Lost it? `manage.py changepassword admin`."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction


class Command(BaseCommand):
    help = "Create the first panel admin if no admin exists, and show where to log in."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--username", default="admin")

    def handle(self, *args, port, username, **options):
        User = get_user_model()
        url = f"http://127.0.0.1:{port}/"
        with transaction.atomic():
            has_admin = (
                User.objects.filter(is_active=True)
                .filter(is_superuser=True)
                .union(User.objects.filter(is_active=True, groups__name="admin"))
                .exists()
            )
            if has_admin:
                self.stdout.write(
                    f"\n  Web panel      {url}   log in with your panel account "
                    f"(forgot it? python manage.py changepassword {username})\n"
                )
                return
            if User.objects.filter(username=username).exists():
                self.stdout.write(
                    f"  Web panel      {url}   no admin yet, and a user {username!r} exists "
                    "without the role: python manage.py createsuperuser\n"
                )
                return
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(
            f"""
  Web panel      {url}
  First admin    user {username}   password {password}
                 Shown this once and stored nowhere: note it now, or change it in the panel.
"""
        )
