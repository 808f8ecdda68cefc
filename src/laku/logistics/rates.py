"""Shipping rates: each courier's price for an order's parcel, from the warehouse to the
buyer."""

import uuid

from laku.address.client import AddressClient
from laku.core.errors import Conflict
from laku.core.security import Principal
from laku.core.settings import Settings
from laku.logistics.schemas import RateOut, RatesOut, RatesRequest
from laku.logistics.shipments import (
    destination,
    order_not_found,
    parcel_items,
    shipping_failure,
)
from laku.order.client import OrderClient, OrderOut
from laku.providers.biteship.client import BiteshipClient, BiteshipError


class Rates:
    """Asks order-service, address-service and Biteship."""

    def __init__(
        self,
        *,
        orders: OrderClient,
        addresses: AddressClient,
        biteship: BiteshipClient,
        settings: Settings,
    ):
        self._orders = orders
        self._addresses = addresses
        self._biteship = biteship
        self._settings = settings

    async def rates(self, principal: Principal, request: RatesRequest) -> RatesOut:
        """The couriers' prices for the order's parcel from the warehouse to the buyer."""
        order = await self._order(request.order_id, principal)
        address = await destination(self._addresses, order, request.address_id)
        origin = self._settings.warehouse_postal_code
        for sent, derived in (
            (request.origin_postal_code, origin),
            (request.destination_postal_code, address.postal_code),
        ):
            if sent is not None and sent != derived:
                raise Conflict(
                    f"Postal code {sent} is not the shipment's {derived}",
                    code="postal_code_mismatch",
                )
        items = parcel_items(order, self._settings)
        try:
            pricing = await self._biteship.rates(
                origin_postal_code=origin,
                destination_postal_code=address.postal_code,
                couriers=request.couriers,
                items=items,
            )
        except BiteshipError as exc:
            raise shipping_failure(exc) from exc
        return RatesOut(
            order_id=order.id,
            address_id=address.id,
            origin_postal_code=origin,
            destination_postal_code=address.postal_code,
            weight_grams=sum(item.weight * item.quantity for item in items),
            rates=[
                RateOut(
                    courier_company=rate.courier_code,
                    courier_name=rate.courier_name,
                    courier_type=rate.courier_service_code,
                    courier_service_name=rate.courier_service_name,
                    description=rate.description,
                    duration=rate.duration,
                    price=rate.price,
                )
                for rate in pricing
            ],
        )

    async def _order(self, order_id: uuid.UUID, principal: Principal) -> OrderOut:
        """The order if the caller may see it; to another buyer it does not exist."""
        order = await self._orders.get_order(order_id)
        if order is None or (not principal.is_privileged and order.user_id != principal.user_id):
            raise order_not_found()
        return order
