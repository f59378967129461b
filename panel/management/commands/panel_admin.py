"""Make sure the panel has a first admin; print how to log in.

A password is generated only when the admin is created and printed that once: only its hash
is stored, so it is in no file. Or it comes from ADMIN_PASSWORD (the compose stack passes it
through), which is then never printed. Lost it? `manage.py changepassword admin`."""

import os
import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
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
            chosen = os.environ.get("ADMIN_PASSWORD", "")
            if chosen:
                try:
                    validate_password(chosen)
                except ValidationError as exc:
                    raise CommandError(f"ADMIN_PASSWORD: {' '.join(exc.messages)}") from exc
            password = chosen or secrets.token_urlsafe(12)
            User.objects.create_superuser(username=username, email="", password=password)
        if chosen:
            self.stdout.write(
                f"\n  Web panel      {url}\n  First admin    user {username}   "
                "password from ADMIN_PASSWORD\n"
            )
            return
        self.stdout.write(
            f"""
  Web panel      {url}
  First admin    user {username}   password {password}
                 Shown this once and stored nowhere: note it now, or change it in the panel.
"""
        )
