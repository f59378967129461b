"""Log in, log out, change password: Django's own views with the panel's templates."""

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.urls import reverse_lazy

from panel.access import any_role_may_post, public


class PasswordChange(auth_views.PasswordChangeView):
    template_name = "panel/password_change.html"
    success_url = reverse_lazy("panel:dashboard")

    def form_valid(self, form):
        messages.success(self.request, "Your password was changed.")
        return super().form_valid(form)


login = public(
    auth_views.LoginView.as_view(template_name="panel/login.html", redirect_authenticated_user=True)
)
logout = public(any_role_may_post(auth_views.LogoutView.as_view()))
password_change = any_role_may_post(PasswordChange.as_view())
