"""The platform's services: name, seed port, database schema and app factory."""

from dataclasses import dataclass

from laku.core.settings import Settings


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port: int
    schema: str
    app_factory: str  # "module:function" for uvicorn --factory

    @property
    def package(self) -> str:
        return f"laku.{self.schema}"

    def url(self, settings: Settings) -> str:
        return f"http://{settings.host}:{self.port + settings.port_offset}"


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec("auth", 3001, "auth", "laku.auth.app:create_app"),
        ServiceSpec("product", 3002, "product", "laku.product.app:create_app"),
        ServiceSpec("factory", 3003, "factory", "laku.factory.app:create_app"),
        ServiceSpec("address", 3015, "address", "laku.address.app:create_app"),
    )
}


def service_url(name: str, settings: Settings) -> str:
    return SERVICES[name].url(settings)
