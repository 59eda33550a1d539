from django import forms

from consent.models import Channel


class PreferencesForm(forms.Form):
    """One checkbox per channel. A channel without an address on file (no email, no phone) is
    disabled: Django then keeps its initial value, so it can never change from this form."""

    email = forms.BooleanField(required=False)
    sms = forms.BooleanField(required=False)
    in_app = forms.BooleanField(required=False)

    def __init__(self, *args, current: dict[str, bool], available: dict[str, bool], **kwargs):
        super().__init__(*args, initial=current, **kwargs)
        for channel in Channel.values:
            self.fields[channel].disabled = not available[channel]

    def wanted(self) -> dict[str, bool]:
        return {channel: bool(self.cleaned_data[channel]) for channel in Channel.values if not self.fields[channel].disabled}
