"""Biteship API sandbox: courier rates, orders with waybills and tracking, and status webhooks.

It speaks the contract of `POST /v1/rates/couriers`, `POST /v1/orders`, `GET /v1/orders/{id}`
and `GET /v1/trackings/{id}` (the API key as the `Authorization` header,
`{"success": false, "error", "code"}` refusals) for three couriers (jne, jnt, sicepat) by postal
code. Like Biteship it POSTs the `order.status` webhook to our webhook URL on every status change,
with the header the merchant configured (`X-Biteship-Signature: <biteship_webhook_secret>`), and
retries a delivery that is not answered 2xx with back-off before giving up.

Prices are deterministic so tests can assert them: `shipping_price` is the service's rate per
kilogram plus a surcharge per postal region crossed (the first digit of an Indonesian postal code
is its region), times the total weight rounded up to whole kilograms. Where Biteship's behaviour
or codes are not documented, the sandbox chooses: a malformed body is refused with code
40000000, an unknown courier service with 40002030, an unknown order or tracking 404 with
40402001 / 40403001; an order moves only forward along confirmed -> allocated -> picking_up ->
picked -> dropping_off -> delivered unless a status is set outright.

Under `/sandbox`: move an order to its next status or set one (the webhook follows), send an
order's webhook again, list orders and webhook delivery attempts. Everything is kept in memory
and lost on restart.
"""

import hmac
import math
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AliasPath, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from laku.core.sandbox import WebhookAttempt, WebhookLog, WebhookSender, create_sandbox_app
from laku.core.schemas import WireModel
from laku.core.services import service_url
from laku.core.settings import Settings, get_settings
from laku.providers.biteship.client import ORDER_STATUSES, WEBHOOK_SECRET_HEADER

# Biteship retries a webhook that was refused or not answered; the sandbox waits this long
# before each retry, then gives up (six attempts, about 15 s in all).
RETRY_DELAYS_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)
# The path `advance` walks, one status a call.
STATUS_FLOW = ("confirmed", "allocated", "picking_up", "picked", "dropping_off", "delivered")
# The sandbox's couriers name no driver.
_NO_DRIVER = dict.fromkeys(
    ("driver_name", "driver_phone", "driver_photo_url", "driver_plate_number")
)


@dataclass(frozen=True)
class CourierService:
    code: str
    name: str
    description: str
    rate_per_kg: int
    per_region: int  # added to the rate per kilogram for each postal region crossed
    duration_range: str  # days
    service_type: str = "standard"


@dataclass(frozen=True)
class Courier:
    code: str
    name: str
    waybill_prefix: str
    services: dict[str, CourierService]


def _courier(code: str, name: str, waybill_prefix: str, *services: CourierService) -> Courier:
    return Courier(code, name, waybill_prefix, {service.code: service for service in services})


COURIERS: dict[str, Courier] = {
    courier.code: courier
    for courier in (
        _courier(
            "jne",
            "JNE",
            "JNE",
            CourierService("reg", "Reguler", "Layanan reguler", 9_000, 2_000, "2 - 3"),
            CourierService("yes", "Yakin Esok Sampai", "Sampai besok", 18_000, 3_000, "1 - 1"),
        ),
        _courier(
            "jnt",
            "J&T",
            "JP",
            CourierService("ez", "Reguler", "Layanan reguler", 8_500, 2_000, "2 - 3"),
        ),
        _courier(
            "sicepat",
            "SiCepat",
            "00",
            CourierService("reg", "Reguler", "Layanan reguler", 8_000, 1_500, "1 - 2"),
            CourierService("best", "Besok Sampai Tujuan", "Sampai besok", 15_000, 2_500, "1 - 1"),
        ),
    )
}


def shipping_price(
    service: CourierService, origin_postal_code: str, destination_postal_code: str, grams: int
) -> int:
    """The service's price for a parcel of `grams` between two postal codes."""
    regions_crossed = abs(int(origin_postal_code[0]) - int(destination_postal_code[0]))
    kilograms = max(1, math.ceil(grams / 1000))
    return (service.rate_per_kg + service.per_region * regions_crossed) * kilograms


class BiteshipApiError(Exception):
    """Answered as Biteship answers a refusal: `{"success": false, "error", "code"}`."""

    def __init__(self, status: int, code: int, error: str):
        super().__init__(error)
        self.status = status
        self.body = {"success": False, "error": error, "code": code}


def _answer(kind: str, message: str) -> dict[str, Any]:
    """What every answer of Biteship's API starts with."""
    return {"success": True, "message": message, "object": kind}


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _postal_code(value: Any) -> Any:
    """Biteship takes postal codes as numbers; strings of digits pass too."""
    return str(value).zfill(5) if isinstance(value, int) and not isinstance(value, bool) else value


PostalCode = Annotated[str, BeforeValidator(_postal_code), Field(pattern=r"^[0-9]{5}$")]
Parsed = TypeVar("Parsed", bound=BaseModel)


class Item(_Request):
    name: Annotated[str, Field(min_length=1)]
    description: str | None = None
    value: Annotated[int, Field(ge=0)]
    quantity: Annotated[int, Field(ge=1)]
    weight: Annotated[int, Field(ge=1, description="Grams, per unit.")]


class RatesRequest(_Request):
    origin_postal_code: PostalCode
    destination_postal_code: PostalCode
    couriers: Annotated[str, Field(min_length=1)]
    items: Annotated[list[Item], Field(min_length=1)]


class OrderRequest(_Request):
    """The `POST /v1/orders` fields the sandbox reads. The contact, address and delivery type
    fields are checked one by one so each missing one gets Biteship's own error code."""

    shipper_contact_name: str | None = None
    shipper_contact_phone: str | None = None
    shipper_organization: str | None = None
    origin_contact_name: str | None = None
    origin_contact_phone: str | None = None
    origin_address: str | None = None
    origin_note: str | None = None
    origin_postal_code: PostalCode | None = None
    destination_contact_name: str | None = None
    destination_contact_phone: str | None = None
    destination_address: str | None = None
    destination_note: str | None = None
    destination_postal_code: PostalCode | None = None
    courier_company: Annotated[str, Field(min_length=1)]
    courier_type: Annotated[str, Field(min_length=1)]
    delivery_type: str | None = None
    reference_id: str | None = None
    items: Annotated[list[Item], Field(min_length=1)]


# Biteship's codes for a create-order request missing what it needs, in the order it checks.
_REQUIRED_ORDER_FIELDS = (
    ("origin_contact_name", 40002014, "Please make sure origin contact name is filled"),
    ("origin_contact_phone", 40002015, "Please make sure origin contact phone is filled"),
    ("origin_address", 40002016, "Please make sure origin address is filled"),
    ("origin_postal_code", 40002011, "Either origin needs to have postal code or coordinate"),
    ("destination_contact_name", 40002017, "Please make sure destination contact name is filled"),
    (
        "destination_contact_phone",
        40002018,
        "Please make sure destination contact phone is filled",
    ),
    ("destination_address", 40002019, "Please make sure destination address is filled"),
    (
        "destination_postal_code",
        40002010,
        "Either destination needs to have postal code or coordinate",
    ),
    (
        "delivery_type",
        40002005,
        "Delivery type has no value. Please specify whether it's a 'Now', or 'Scheduled' "
        "delivery type",
    ),
)


def _parse(model: type[Parsed], body: Any) -> Parsed:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise BiteshipApiError(400, 40000000, f"{where}: {first['msg']}") from None


def _total_grams(items: list[Item]) -> int:
    return sum(item.weight * item.quantity for item in items)


@dataclass
class SandboxOrder:
    id: str
    request: OrderRequest
    price: int
    tracking_id: str
    waybill_id: str
    created: datetime
    status: str = "confirmed"
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def updated(self) -> datetime:
        return self.history[-1]["at"]

    def move_to(self, status: str) -> None:
        self.status = status
        self.history.append({"status": status, "at": datetime.now(UTC)})

    def as_resource(self) -> dict[str, Any]:
        """The order as the Order API returns it."""
        r = self.request
        return {
            **_answer("order", "Order successfully retrieved"),
            "id": self.id,
            "shipper": {
                "name": r.shipper_contact_name,
                "phone": r.shipper_contact_phone,
                "organization": r.shipper_organization,
            },
            "origin": {
                "contact_name": r.origin_contact_name,
                "contact_phone": r.origin_contact_phone,
                "address": r.origin_address,
                "note": r.origin_note,
                "postal_code": int(r.origin_postal_code or 0),
            },
            "destination": {
                "contact_name": r.destination_contact_name,
                "contact_phone": r.destination_contact_phone,
                "address": r.destination_address,
                "note": r.destination_note,
                "postal_code": int(r.destination_postal_code or 0),
            },
            "courier": {
                "tracking_id": self.tracking_id,
                "waybill_id": self.waybill_id,
                "company": r.courier_company,
                "type": r.courier_type,
                **_NO_DRIVER,
                "link": None,
                "insurance": {"amount": 0, "fee": 0, "note": ""},
                "routing_code": None,
            },
            "delivery": {
                "datetime": _timestamp(self.created),
                "note": None,
                "type": r.delivery_type,
                "distance": None,
                "distance_unit": "kilometer",
            },
            "reference_id": r.reference_id,
            "items": [item.model_dump() for item in r.items],
            "extra": [],
            "price": self.price,
            "metadata": {},
            "note": None,
            "status": self.status,
        }

    def as_tracking(self) -> dict[str, Any]:
        """The order's tracking as the Tracking API returns it."""
        r = self.request
        return {
            **_answer("tracking", "Successfully get tracking info"),
            "id": self.tracking_id,
            "waybill_id": self.waybill_id,
            "courier": {"company": r.courier_company, **_NO_DRIVER},
            "origin": {"contact_name": r.origin_contact_name, "address": r.origin_address},
            "destination": {
                "contact_name": r.destination_contact_name,
                "address": r.destination_address,
            },
            "history": [
                {
                    "note": ORDER_STATUSES[entry["status"]],
                    "service_type": r.courier_type,
                    "status": entry["status"],
                    "updated_at": _timestamp(entry["at"]),
                }
                for entry in self.history
            ],
            "link": None,
            "order_id": self.id,
            "status": self.status,
        }

    def as_webhook(self) -> dict[str, Any]:
        """The `order.status` webhook of the order's current status; `updated_at` is when it
        took that status, the same moment as its tracking history entry."""
        r = self.request
        return {
            "event": "order.status",
            "courier_tracking_id": self.tracking_id,
            "courier_waybill_id": self.waybill_id,
            "courier_company": r.courier_company,
            "courier_type": r.courier_type,
            **{f"courier_{name}": value for name, value in _NO_DRIVER.items()},
            "courier_link": None,
            "order_id": self.id,
            "order_price": self.price,
            "status": self.status,
            "updated_at": _timestamp(self.updated),
        }


class OrderWebhookAttempt(WebhookAttempt):
    order_id: str = Field(validation_alias=AliasPath("payload", "order_id"))
    status: str = Field(validation_alias=AliasPath("payload", "status"))


class StatusChange(WireModel):
    status: str


@dataclass
class BiteshipSandbox:
    settings: Settings
    orders: dict[str, SandboxOrder] = field(default_factory=dict)
    webhook_sender: WebhookSender = field(init=False)
    webhooks: WebhookLog[OrderWebhookAttempt] = field(init=False)

    def __post_init__(self) -> None:
        self.webhook_sender = WebhookSender(
            self.settings,
            headers=lambda: self.webhook_headers,
            retry_delays_seconds=RETRY_DELAYS_SECONDS,
        )
        self.webhooks = WebhookLog(self.webhook_sender, OrderWebhookAttempt)

    @property
    def webhook_url(self) -> str:
        return (
            self.settings.biteship_webhook_url
            or f"{service_url('logistics', self.settings)}/api/shipments/webhook"
        )

    @property
    def webhook_headers(self) -> dict[str, str]:
        return {WEBHOOK_SECRET_HEADER: self.settings.biteship_webhook_secret.get_secret_value()}

    def authenticate(self, authorization: str | None) -> None:
        expected = self.settings.biteship_api_key.get_secret_value()
        if not hmac.compare_digest((authorization or "").encode(), expected.encode()):
            raise BiteshipApiError(401, 40101001, "Authorization failed")

    def rates(self, request: RatesRequest) -> dict[str, Any]:
        grams = _total_grams(request.items)
        asked = [code.strip().lower() for code in request.couriers.split(",")]
        couriers = [COURIERS[code] for code in dict.fromkeys(asked) if code in COURIERS]
        if not couriers:
            raise BiteshipApiError(
                400, 40001010, f"No courier available for couriers {request.couriers!r}"
            )
        origin, destination = request.origin_postal_code, request.destination_postal_code
        return {
            **_answer("courier_pricing", "Success to retrieve courier pricing"),
            "code": 20001003,
            "origin": {"postal_code": int(origin)},
            "destination": {"postal_code": int(destination)},
            "pricing": [
                {
                    "available_collection_method": ["pickup"],
                    "available_for_cash_on_delivery": False,
                    "available_for_proof_of_delivery": False,
                    "available_for_instant_waybill_id": True,
                    "available_for_insurance": True,
                    "company": courier.code,
                    "courier_name": courier.name,
                    "courier_code": courier.code,
                    "courier_service_name": service.name,
                    "courier_service_code": service.code,
                    "description": service.description,
                    "duration": f"{service.duration_range} days",
                    "shipment_duration_range": service.duration_range,
                    "shipment_duration_unit": "days",
                    "service_type": service.service_type,
                    "shipping_type": "parcel",
                    "price": shipping_price(service, origin, destination, grams),
                    "type": service.code,
                }
                for courier in couriers
                for service in courier.services.values()
            ],
        }

    def create_order(self, request: OrderRequest) -> SandboxOrder:
        for name, code, error in _REQUIRED_ORDER_FIELDS:
            if not getattr(request, name):
                raise BiteshipApiError(400, code, error)
        if request.delivery_type not in ("now", "scheduled"):
            raise BiteshipApiError(
                400, 40002006, "Please make sure to input the right delivery type value"
            )
        courier = COURIERS.get(request.courier_company)
        service = courier.services.get(request.courier_type) if courier else None
        if courier is None or service is None:
            raise BiteshipApiError(
                400,
                40002030,
                f"Courier {request.courier_company} {request.courier_type} is not available",
            )
        now = datetime.now(UTC)
        order = SandboxOrder(
            id=secrets.token_hex(12),  # Biteship's ids are 24 hex digits
            request=request,
            price=shipping_price(
                service,
                str(request.origin_postal_code),  # both checked above
                str(request.destination_postal_code),
                _total_grams(request.items),
            ),
            tracking_id=secrets.token_hex(12),
            waybill_id=f"{courier.waybill_prefix}{secrets.randbelow(10**12):012d}",
            created=now,
            history=[{"status": "confirmed", "at": now}],
        )
        self.orders[order.id] = order
        return order

    def find(self, order_id: str) -> SandboxOrder:
        order = self.orders.get(order_id)
        if order is None:
            raise BiteshipApiError(404, 40402001, f"Order {order_id} not found")
        return order

    def find_tracking(self, tracking_id: str) -> SandboxOrder:
        for order in self.orders.values():
            if order.tracking_id == tracking_id:
                return order
        raise BiteshipApiError(404, 40403001, f"Tracking {tracking_id} not found")

    def advance(self, order: SandboxOrder) -> None:
        """The courier takes the next step; its webhook follows."""
        if order.status not in STATUS_FLOW[:-1]:
            raise BiteshipApiError(
                409, 40902001, f"Order {order.id} is {order.status}: it has no next status"
            )
        self.set_status(order, STATUS_FLOW[STATUS_FLOW.index(order.status) + 1])

    def set_status(self, order: SandboxOrder, status: str) -> None:
        """The order takes `status` and its webhook follows; its own status changes nothing."""
        if status not in ORDER_STATUSES:
            raise BiteshipApiError(
                400, 40000000, f"status is one of {', '.join(sorted(ORDER_STATUSES))}"
            )
        if status == order.status:
            return
        order.move_to(status)
        self.send_webhook(order)

    def send_webhook(self, order: SandboxOrder) -> None:
        """Deliver the order's current status after the caller has been answered."""
        # The payload is what happened now, even if the order moves on while retrying.
        self.webhooks.send(self.webhook_url, order.as_webhook())


async def _json_body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise BiteshipApiError(400, 40000000, "The request body is not valid JSON") from None


def create_app() -> FastAPI:
    sandbox = BiteshipSandbox(settings=get_settings())
    app = create_sandbox_app("biteship", lifespan=sandbox.webhook_sender.lifespan)

    @app.exception_handler(BiteshipApiError)
    async def biteship_error(_: Request, exc: BiteshipApiError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status)

    @app.post("/v1/rates/couriers", tags=["rates-api"])
    async def courier_rates(request: Request) -> JSONResponse:
        sandbox.authenticate(request.headers.get("authorization"))
        rates_request = _parse(RatesRequest, await _json_body(request))
        return JSONResponse(sandbox.rates(rates_request))

    @app.post("/v1/orders", tags=["order-api"])
    async def create_order(request: Request) -> JSONResponse:
        sandbox.authenticate(request.headers.get("authorization"))
        order = sandbox.create_order(_parse(OrderRequest, await _json_body(request)))
        return JSONResponse({**order.as_resource(), "message": "Order successfully created"})

    @app.get("/v1/orders/{order_id}", tags=["order-api"])
    async def get_order(order_id: str, request: Request) -> JSONResponse:
        sandbox.authenticate(request.headers.get("authorization"))
        return JSONResponse(sandbox.find(order_id).as_resource())

    @app.get("/v1/trackings/{tracking_id}", tags=["tracking-api"])
    async def get_tracking(tracking_id: str, request: Request) -> JSONResponse:
        sandbox.authenticate(request.headers.get("authorization"))
        return JSONResponse(sandbox.find_tracking(tracking_id).as_tracking())

    @app.post("/sandbox/orders/{order_id}/advance", tags=["sandbox"])
    async def advance(order_id: str) -> JSONResponse:
        """The next status of confirmed -> allocated -> picking_up -> picked -> dropping_off ->
        delivered, then its webhook; 409 from delivered or a status off that path."""
        order = sandbox.find(order_id)
        sandbox.advance(order)
        return JSONResponse(order.as_resource())

    @app.post("/sandbox/orders/{order_id}/status", tags=["sandbox"])
    async def set_status(order_id: str, change: StatusChange) -> JSONResponse:
        """Any of Biteship's statuses, then its webhook (none if the order has it already)."""
        order = sandbox.find(order_id)
        sandbox.set_status(order, change.status)
        return JSONResponse(order.as_resource())

    @app.post("/sandbox/orders/{order_id}/resend-webhook", tags=["sandbox"])
    async def resend_webhook(order_id: str) -> JSONResponse:
        """Send the webhook of the order's current status again, as a duplicate."""
        order = sandbox.find(order_id)
        sandbox.send_webhook(order)
        return JSONResponse(order.as_resource())

    @app.get("/sandbox/orders", tags=["sandbox"])
    async def list_orders() -> JSONResponse:
        """Every order since start, oldest first, as the API shows them."""
        return JSONResponse([order.as_resource() for order in sandbox.orders.values()])

    @app.get("/sandbox/webhooks", response_model=list[OrderWebhookAttempt], tags=["sandbox"])
    async def list_webhook_attempts(
        order_id: Annotated[str | None, Query(alias="orderId")] = None,
    ) -> list[OrderWebhookAttempt]:
        """Every webhook delivery attempt, oldest first; `orderId` narrows to one order."""
        return [a for a in sandbox.webhooks.attempts if order_id in (None, a.order_id)]

    return app
