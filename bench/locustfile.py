"""Load test: buyers browse the group buys, join one and pay through the Xendit sandbox; once the
group buy's time is up, it is closed. Point it at any deployment:

    pip install -e '.[load]'
    locust -f bench/locustfile.py --headless -u 20 -r 5 -t 2m --host http://127.0.0.1

`--host` is where the services are. `--routing ports` (the default) reaches each service on its
own port of that host plus `--port-offset` (what `make up` runs); `--routing single` sends every
request to the host as it is (an ingress routing by path: every service's paths are its own).
The run sets up its own catalog and group buy as the admin (`--admin-email`,
`--admin-password`), with stock for every join, closing `--close-after` seconds after it starts.
Every simulated buyer registers, logs in and joins from this machine's one address: start the
target with its per-address limits raised (`LAKU_RATE_LIMITS`, README "Rate limits"), or the
run measures the limits.
"""

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from locust import HttpUser, between, events, task
from locust.env import Environment

from laku.core.services import PROCESSES

PORTS = {name: spec.port for name, spec in PROCESSES.items()}
STOCK_PER_SIZE = 100_000


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    parser.add_argument("--routing", choices=["ports", "single"], default="ports")
    parser.add_argument("--port-offset", type=int, default=0)
    parser.add_argument("--admin-email", default="admin@laku.id")
    # Default: the one `make up` generated into its data folder (run from the repository).
    parser.add_argument("--admin-password", default=None)
    parser.add_argument("--close-after", type=float, default=90.0)


def _admin_password(options: Any) -> str:
    if options.admin_password is not None:
        return options.admin_password
    return (Path(".laku") / "secrets" / "admin_password").read_text().strip()


class Target:
    """Where each service is, and the group buy the run set up."""

    session_id = ""
    variants: list[str] = []  # noqa: RUF012 - set once by the run's set-up
    ends_at = 0.0
    admin_token = ""

    @staticmethod
    def url(environment: Environment, service: str, path: str) -> str:
        options = environment.parsed_options
        host = (environment.host or "http://127.0.0.1").rstrip("/")
        if options.routing == "single":
            return host + path
        parts = urlsplit(host)
        return f"{parts.scheme}://{parts.hostname}:{PORTS[service] + options.port_offset}{path}"


def _ok(response: Any, status: int = 200) -> Any:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.method} {response.url}: {response.status_code}")
    return response.json()


@events.test_start.add_listener
def _set_up(environment: Environment, **_: Any) -> None:
    """A factory, a T-shirt in three sizes with stock for every join, an open group buy."""
    import httpx

    options = environment.parsed_options

    def url(service: str, path: str) -> str:
        return Target.url(environment, service, path)

    suffix = uuid.uuid4().hex[:8].upper()
    with httpx.Client(timeout=30) as http:
        token = _ok(
            http.post(
                url("auth", "/api/auth/login"),
                json={"email": options.admin_email, "password": _admin_password(options)},
            )
        )["accessToken"]
        admin = {"Authorization": f"Bearer {token}"}

        def create(service: str, path: str, body: Any) -> Any:
            return _ok(http.post(url(service, path), json=body, headers=admin), 201)

        factory = create(
            "factory",
            "/api/factories",
            {
                "name": f"Konveksi Beban {suffix}",
                "ownerName": "Budi",
                "phone": f"+62812{int(suffix, 16) % 10**7:07d}",
                "address": "Jl. Industri 5, Bandung",
                "postalCode": "40123",
            },
        )
        category = create(
            "product", "/api/categories", {"name": "Pakaian", "slug": f"pakaian-{suffix.lower()}"}
        )
        product = create(
            "product",
            "/api/products",
            {
                "factoryId": factory["id"],
                "categoryId": category["id"],
                "sku": f"LOAD-{suffix}",
                "name": "Load Test T-Shirt",
                "basePrice": 100_000,
                "costPrice": 60_000,
                "moq": 10,
                "groupDurationHours": 1,
            },
        )
        variants = [
            variant["id"]
            for variant in create(
                "product",
                f"/api/products/{product['id']}/variants",
                [
                    {"sku": f"LOAD-{suffix}-{size}", "variantName": size, "priceAdjustment": 0}
                    for size in ("S", "M", "L")
                ],
            )
        ]
        create(
            "warehouse",
            "/api/inventory",
            [
                {
                    "productId": product["id"],
                    "variantId": variant,
                    "quantity": STOCK_PER_SIZE,
                    "maxStockLevel": STOCK_PER_SIZE,
                    "reorderThreshold": 0,
                }
                for variant in variants
            ],
        )
        end = datetime.now(UTC) + timedelta(seconds=options.close_after)
        session = create(
            "group-buying",
            "/api/group-buying",
            {
                "productId": product["id"],
                "factoryId": factory["id"],
                "targetMoq": 10,
                "priceTier25": 95_000,
                "priceTier50": 85_000,
                "priceTier75": 75_000,
                "priceTier100": 65_000,
                "endTime": end.isoformat(),
                "estimatedCompletionDate": (end + timedelta(days=14)).isoformat(),
            },
        )
    Target.session_id = session["id"]
    Target.variants = variants
    Target.ends_at = time.time() + options.close_after
    Target.admin_token = token


class Buyer(HttpUser):
    """Browses mostly; now and then signs up, joins the group buy and pays."""

    wait_time = between(0.5, 2.0)

    def url(self, service: str, path: str) -> str:
        return Target.url(self.environment, service, path)

    @task(6)
    def browse(self) -> None:
        session = Target.session_id
        self.client.get(self.url("group-buying", "/api/group-buying"), name="list group buys")
        self.client.get(
            self.url("group-buying", f"/api/group-buying/{session}"), name="one group buy"
        )
        self.client.get(
            self.url("group-buying", f"/api/group-buying/{session}/variant-availability"),
            name="variant availability",
        )
        self.client.get(self.url("product", "/api/products"), name="list products")

    @task(1)
    def join_and_pay(self) -> None:
        email = f"load-{uuid.uuid4().hex[:12]}@laku.id"
        self.client.post(
            self.url("auth", "/api/auth/register"),
            json={"email": email, "password": "load-test-password", "name": "Pembeli"},
            name="register",
        )
        login = self.client.post(
            self.url("auth", "/api/auth/login"),
            json={"email": email, "password": "load-test-password"},
            name="login",
        )
        if login.status_code != 200:
            return
        buyer = {"Authorization": f"Bearer {login.json()['accessToken']}"}
        if time.time() > Target.ends_at - 2:
            return  # the group buy is closing: a join now is refused, rightly
        variant = Target.variants[hash(email) % len(Target.variants)]
        joined = self.client.post(
            self.url("group-buying", f"/api/group-buying/{Target.session_id}/join"),
            json={"variantId": variant, "quantity": 1},
            headers=buyer,
            name="join",
        )
        if joined.status_code != 201:
            return
        invoice_id = joined.json()["paymentUrl"].rstrip("/").rsplit("/", 1)[-1]
        self.client.post(
            self.url("xendit-sandbox", f"/sandbox/invoices/{invoice_id}/pay"), name="pay (sandbox)"
        )


class Closer(HttpUser):
    """Closes the group buy once its time is up (the close's own time is reported)."""

    fixed_count = 1
    wait_time = between(1.0, 1.0)
    closed = False

    @task
    def close_when_due(self) -> None:
        if self.closed or time.time() < Target.ends_at:
            return
        response = self.client.post(
            Target.url(self.environment, "group-buying", "/api/group-buying/process-expired"),
            headers={"Authorization": f"Bearer {Target.admin_token}"},
            name="close (process-expired)",
            timeout=300,
        )
        self.closed = response.status_code == 200
