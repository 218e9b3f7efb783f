from django.urls import path
from library import views

urlpatterns = [
    path("", views.index, name="index"),
    path("documents/", views.upload_document, name="upload-document"),
    path("attachments/", views.upload_attachment, name="upload-attachment"),
    path("media/<path:name>", views.media, name="media"),
]
