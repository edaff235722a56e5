from django.apps import AppConfig


class NetworksConfig(AppConfig):
    name = "networks"
    verbose_name = "kvmweb networks"

    def ready(self):
        # Importing the services registers each operation kind's run function, lock scope,
        # retry policy and recovery step (networks.operation_kinds); the check verifies it.
        from networks import checks  # noqa: F401
        from networks.services import (  # noqa: F401
            create,
            forwards,
            hostdevs,
            hosts,
            interfaces,
            netupdate,
            networks,
            restart,
            sync,
            undo,
            xmledit,
        )
