import factory
from django.contrib.auth import get_user_model

from networks.models import Host, UserRole


class UserFactory(factory.django.DjangoModelFactory):
    """A user with a kvmweb role on every host: admin unless `role=` says otherwise."""

    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"admin{n}")
    password = factory.django.Password("secret-password")
    is_staff = False

    @factory.post_generation
    def role(user, create, extracted, **kwargs):
        if create:
            UserRole.objects.update_or_create(user=user, defaults={"role": extracted or "admin", "all_hosts": True})


class HostFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Host

    name = factory.Sequence(lambda n: f"host{n}")
    uri = "test:///default"
