import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from laku.core.app import DbSession
from laku.core.errors import PROBLEM_RESPONSES
from laku.core.routing import NO_CONTENT, StatusFilter
from laku.core.schemas import Page, Paging
from laku.core.security import (
    AdminPrincipal,
    AnyUser,
    BuyerPrincipal,
    Principal,
    Role,
    public,
    require_roles,
)
from laku.notification import service
from laku.notification.rules import Channel, NotificationStatus
from laku.notification.schemas import (
    NotificationOut,
    NotificationRequest,
    PushSubscriptionCreate,
    PushSubscriptionOut,
    UserNotificationsCreate,
    UserNotificationsOut,
    VapidPublicKeyOut,
)

router = APIRouter(prefix="/api/notifications", tags=["notification"], responses=PROBLEM_RESPONSES)

# Notifications are sent by the platform (its services, and admins), never by buyers.
Sender = Annotated[Principal, Depends(require_roles(Role.ADMIN, services=["warehouse"]))]
UsersNotifier = Annotated[
    Principal, Depends(require_roles(Role.ADMIN, services=["group-buying", "order", "payment"]))
]


@router.post("", response_model=NotificationOut, status_code=status.HTTP_202_ACCEPTED)
async def send_notification(
    body: NotificationRequest, _: Sender, session: DbSession, request: Request
):
    """Accepted for delivery: WhatsApp and e-mail go out in the background (`status` turns
    `sent`), retried while the provider is unavailable; in-app ones are delivered at once."""
    notification = await service.create_notification(session, body)
    if notification.status == NotificationStatus.PENDING:
        request.app.state.outbox_relay.wake()  # after the commit, so the relay sees the row
    return notification


@router.post("/users", response_model=UserNotificationsOut, status_code=status.HTTP_202_ACCEPTED)
async def notify_users(
    body: UserNotificationsCreate, _: UsersNotifier, session: DbSession, request: Request
) -> UserNotificationsOut:
    """Tell up to 2,000 users of an event each, in the app, by e-mail and (users with a phone)
    on WhatsApp; e-mails and WhatsApp messages go out in the background. A key already told
    on a channel is not told again there, so a repeated call sends nothing twice. Users that
    auth-service does not know are skipped and counted."""
    result = await service.notify_users(session, request.app.state.auth, body)
    if result.created:
        request.app.state.outbox_relay.wake()  # after the commit, so the relay sees the rows
    return result


# Web Push: declared before /{notification_id}, as "me" is below.


@router.get(
    "/push/vapid-public-key", response_model=VapidPublicKeyOut, dependencies=[Depends(public)]
)
async def vapid_public_key(request: Request) -> VapidPublicKeyOut:
    """The key a browser subscribes with (`applicationServerKey`): pushes are signed with its
    private half (VAPID, RFC 8292)."""
    return VapidPublicKeyOut(public_key=request.app.state.webpush.public_key)


@router.post(
    "/push-subscriptions", response_model=PushSubscriptionOut, status_code=status.HTTP_201_CREATED
)
async def subscribe(
    body: PushSubscriptionCreate, principal: BuyerPrincipal, session: DbSession
) -> PushSubscriptionOut:
    """Store the buyer's browser subscription (`PushSubscription.toJSON()`): every notice to
    the buyer is then also pushed to it, encrypted for its keys (RFC 8291). Subscribing an
    endpoint again replaces it; one the push service reports gone is removed."""
    subscription = await service.subscribe(session, principal.user_id, body)
    return PushSubscriptionOut.model_validate(subscription)


@router.get("/push-subscriptions/me", response_model=list[PushSubscriptionOut])
async def my_subscriptions(
    principal: BuyerPrincipal, session: DbSession
) -> list[PushSubscriptionOut]:
    subscriptions = await service.list_subscriptions(session, principal.user_id)
    return [PushSubscriptionOut.model_validate(s) for s in subscriptions]


@router.delete("/push-subscriptions/{subscription_id}", **NO_CONTENT)
async def unsubscribe(
    subscription_id: uuid.UUID, principal: BuyerPrincipal, session: DbSession
) -> None:
    await service.unsubscribe(session, subscription_id, principal.user_id)


# Declared before /{notification_id} so "me" is not read as an id.
@router.get("/me", response_model=Page[NotificationOut])
async def my_notifications(
    principal: AnyUser, session: DbSession, paging: Paging
) -> Page[NotificationOut]:
    """The caller's in-app notifications, newest first."""
    return await Page.read(paging, NotificationOut, service.list_inbox, session, principal.user_id)


@router.get("", response_model=Page[NotificationOut])
async def list_notifications(
    _: AdminPrincipal,
    session: DbSession,
    paging: Paging,
    channel: Channel | None = None,
    delivery_status: StatusFilter[NotificationStatus] = None,
) -> Page[NotificationOut]:
    """Every notification, newest first, with its delivery attempts and last error."""
    return await Page.read(
        paging,
        NotificationOut,
        service.list_notifications,
        session,
        channel=channel,
        status=delivery_status,
    )


@router.get("/{notification_id}", response_model=NotificationOut)
async def get_notification(notification_id: uuid.UUID, principal: AnyUser, session: DbSession):
    return await service.get_notification(session, notification_id, principal)


@router.post("/{notification_id}/read", response_model=NotificationOut)
async def mark_read(notification_id: uuid.UUID, principal: AnyUser, session: DbSession):
    return await service.mark_read(session, notification_id, principal.user_id)
