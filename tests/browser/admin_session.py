"""Logging in to the admin as a person does: the login form, filled and submitted in the browser."""

from django.urls import reverse

PASSWORD = "pass-w0rd-for-tests"  # UserFactory's


def log_in(page, live_server, username, *, password=PASSWORD, next_url=None):
    """Submit the login form; returns the POST's status once the page it leads to has loaded
    (navigating away while the redirect still loads can swallow the next form submission)."""
    next_url = next_url or reverse("admin:index")
    page.goto(live_server.url + reverse("admin:login") + "?next=" + next_url)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    with page.expect_response(lambda response: response.request.method == "POST") as posted:
        page.get_by_role("button", name="Log in").click()
    if posted.value.status == 302:
        page.wait_for_url(live_server.url + next_url)
    page.wait_for_load_state()
    return posted.value.status
