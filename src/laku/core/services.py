"""The platform's processes: services (with a database schema each) and provider sandboxes."""

from dataclasses import dataclass

from laku.core.settings import Settings


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    port: int
    app_factory: str  # "module:function" for uvicorn --factory

    def url(self, settings: Settings) -> str:
        port = self.port + settings.port_offset
        if settings.service_url_template:
            return settings.service_url_template.format(name=self.name, port=port)
        return f"http://{settings.host}:{port}"


@dataclass(frozen=True)
class ServiceSpec(ProcessSpec):
    schema: str

    @property
    def package(self) -> str:
        return f"laku.{self.schema}"


def _service(name: str, port: int) -> ServiceSpec:
    schema = name.replace("-", "_")
    return ServiceSpec(name, port, f"laku.{schema}.app:create_app", schema)


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        _service("auth", 3001),
        _service("product", 3002),
        _service("factory", 3003),
        _service("group-buying", 3004),
        _service("order", 3005),
        _service("payment", 3006),
        _service("notification", 3007),
        _service("warehouse", 3008),
        _service("wallet", 3010),
        _service("logistics", 3011),
        _service("settlement", 3013),
        _service("address", 3015),
    )
}

# Local stand-ins for external providers, speaking the providers' own wire contracts.
SANDBOXES: dict[str, ProcessSpec] = {
    spec.name: spec
    for spec in (
        ProcessSpec("xendit-sandbox", 4010, "laku.providers.xendit.sandbox:create_app"),
        ProcessSpec("biteship-sandbox", 4011, "laku.providers.biteship.sandbox:create_app"),
        ProcessSpec("whatsapp-sandbox", 4012, "laku.providers.whatsapp.sandbox:create_app"),
        ProcessSpec("smtp-sandbox", 4013, "laku.providers.smtp.sandbox:create_app"),
        ProcessSpec("push-sandbox", 4014, "laku.providers.webpush.sandbox:create_app"),
    )
}

# The web front end (storefront, admin console, factory portal): no schema of its own, it calls
# the services through their clients. First, so `laku up` starts it and lists its URL first.
WEB = ProcessSpec("web", 3000, "laku.web.app:create_app")

PROCESSES: dict[str, ProcessSpec] = {WEB.name: WEB, **SERVICES, **SANDBOXES}


def service_url(name: str, settings: Settings) -> str:
    return PROCESSES[name].url(settings)
