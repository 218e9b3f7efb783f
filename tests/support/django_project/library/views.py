from django import forms
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from library.models import Attachment, Document


class DocumentForm(forms.ModelForm):
    class Meta:
        model = Document
        fields = ("title", "file")


class AttachmentForm(forms.ModelForm):
    class Meta:
        model = Attachment
        fields = ("file",)


def index(request: HttpRequest) -> HttpResponse:
    context = {
        "documents": Document.objects.order_by("id"),
        "attachments": Attachment.objects.order_by("id"),
        "document_form": DocumentForm(),
        "attachment_form": AttachmentForm(),
    }
    return render(request, "library/index.html", context)


@require_POST
def upload_document(request: HttpRequest) -> HttpResponse:
    form = DocumentForm(request.POST, request.FILES)
    if not form.is_valid():
        return HttpResponse(form.errors.as_text(), status=400)
    form.save()
    return redirect("index")


@require_POST
def upload_attachment(request: HttpRequest) -> HttpResponse:
    form = AttachmentForm(request.POST, request.FILES)
    if not form.is_valid():
        return HttpResponse(form.errors.as_text(), status=400)
    form.save()
    return redirect("index")


def media(request: HttpRequest, name: str) -> FileResponse:
    """Files on the local tier (its public_url is /media/{key}); a web server would serve
    the folder itself in production."""
    try:
        return FileResponse(default_storage.open(name))
    except FileNotFoundError:
        raise Http404(name) from None
