import factory
from django.contrib.auth import get_user_model

from networks.models import Host


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]

    username = factory.Sequence(lambda n: f"admin{n}")
    password = factory.django.Password("secret-password")
    is_staff = True


class HostFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Host

    name = factory.Sequence(lambda n: f"host{n}")
    uri = "test:///default"
