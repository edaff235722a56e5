"""Forms of the desired-state pages: a document (pasted or uploaded) and target hosts."""

from django import forms

from networks.services.desired import MAX_DOCUMENT_CHARS


class PlanForm(forms.Form):
    """A document and the hosts to plan it against. `hosts` lists only the user's hosts, so
    a host outside the scope is an invalid choice, as unknown as a host that does not exist."""

    document = forms.CharField(
        required=False, max_length=MAX_DOCUMENT_CHARS, strip=False,
        widget=forms.Textarea(attrs={"rows": 12, "cols": 100, "spellcheck": "false"}),
        help_text="A document exported by kvmweb (kvmweb: networks/v1), or upload one below.",
    )  # fmt: skip
    upload = forms.FileField(required=False, label="or upload a document (.yaml)")
    hosts = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple, label="Target hosts")
    prune = forms.BooleanField(required=False, label="Delete networks the document does not hold (prune)")
    # Set by a copy's Apply: a target's different network of the same name stays a conflict.
    keep_existing = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, host_names: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["hosts"].choices = [(name, name) for name in host_names]

    def clean(self):
        cleaned = super().clean()
        upload = cleaned.get("upload")
        if upload:
            if upload.size > MAX_DOCUMENT_CHARS:
                raise forms.ValidationError(f"A document has at most {MAX_DOCUMENT_CHARS:,} bytes.")
            try:
                cleaned["document"] = upload.read().decode("utf-8")
            except UnicodeDecodeError:
                raise forms.ValidationError("The uploaded file is not UTF-8 text.") from None
        if not cleaned.get("document"):
            raise forms.ValidationError("Paste or upload a document.")
        return cleaned


class CopyForm(forms.Form):
    hosts = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple, label="Copy to")
    replace = forms.BooleanField(
        required=False, label="Replace a different network of the same name on a target host (else a conflict there)"
    )

    def __init__(self, *args, host_names: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["hosts"].choices = [(name, name) for name in host_names]
