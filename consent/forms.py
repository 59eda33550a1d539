from django import forms

from consent.models import Channel


class PreferencesForm(forms.Form):
    """One checkbox per channel. A channel without an address on file (no email, no phone) is
    disabled: Django then keeps its initial value, so it can never change from this form.

    The link that opened the page was sent on one channel (``link_channel``). Whoever holds it
    (a forwarded email, a system reading the app inbox) is not proven to own the other
    addresses, so granting consent on another channel needs the explicit ``confirm_others``
    tick; without it the form is invalid and nothing is recorded. Withdrawing needs no tick on
    any channel: withdrawing must stay as easy as granting (GDPR Art. 7(3)), and a withdrawal
    contacts nobody.
    """

    email = forms.BooleanField(required=False)
    sms = forms.BooleanField(required=False)
    in_app = forms.BooleanField(required=False)
    confirm_others = forms.BooleanField(required=False)

    def __init__(self, *args, current: dict[str, bool], available: dict[str, bool], link_channel: str,
                 other_channels_error: str = "{channels}", channel_labels: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, initial=current, **kwargs)
        self.current = current
        self.link_channel = link_channel
        self.other_channels_error = other_channels_error
        self.channel_labels = channel_labels or {}
        for channel in Channel.values:
            self.fields[channel].disabled = not available[channel]

    def clean(self):
        cleaned = super().clean()
        others = [channel for channel, want in self.wanted().items()
                  if channel != self.link_channel and want and not self.current[channel]]
        if others and not cleaned.get("confirm_others"):
            names = "、".join(self.channel_labels.get(c, c) for c in others) if self.channel_labels else ", ".join(others)
            raise forms.ValidationError(self.other_channels_error.format(channels=names), code="confirm_others")
        return cleaned

    def wanted(self) -> dict[str, bool]:
        data = getattr(self, "cleaned_data", {})
        return {channel: bool(data.get(channel)) for channel in Channel.values if not self.fields[channel].disabled}
