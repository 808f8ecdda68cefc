"""Shipping rates: each courier's price for an order's parcel, from the warehouse to the
buyer."""

from laku.core.errors import Conflict
from laku.core.security import Principal
from laku.logistics.schemas import RateOut, RatesOut, RatesRequest
from laku.logistics.shipments import Shipping, order_not_found


async def quote(shipping: Shipping, principal: Principal, request: RatesRequest) -> RatesOut:
    """The couriers' prices for the order's parcel from the warehouse to the buyer. To another
    buyer the order does not exist."""
    order = await shipping.orders.get_order(request.order_id)
    if order is None or (not principal.is_privileged and order.user_id != principal.user_id):
        raise order_not_found()
    address = await shipping.destination(order, request.address_id)
    origin = shipping.settings.warehouse_postal_code
    for sent, derived in (
        (request.origin_postal_code, origin),
        (request.destination_postal_code, address.postal_code),
    ):
        if sent is not None and sent != derived:
            raise Conflict(
                f"Postal code {sent} is not the shipment's {derived}",
                code="postal_code_mismatch",
            )
    items = shipping.items([order])
    pricing = await shipping.prices(address.postal_code, request.couriers, items)
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
