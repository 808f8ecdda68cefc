"""Platform settings, read from `LAKU_*` environment variables (and `.env`)."""

from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAKU_", env_file=".env", extra="ignore")

    # Unset: `laku up` starts an embedded PostgreSQL under `data_dir` and sets it for the services.
    database_url: str | None = None
    # A service given its own PostgreSQL: service name -> URL, as JSON in `LAKU_DATABASE_URLS`
    # (`{"wallet": "postgresql://..."}`). No service reads another's schema, so any of them may
    # move; the rest keep `database_url`.
    database_urls: dict[str, str] = {}
    # Per service process; a dozen services share one server's connection limit (often 100).
    database_pool_size: int = 3
    database_max_overflow: int = 2
    data_dir: Path = Path(".laku")

    host: str = "127.0.0.1"
    # How a service reaches another (and a sandbox): unset, `http://{host}:{port}`; in a
    # container network, e.g. `http://{name}:{port}` (the service's DNS name). `{port}` is the
    # seed port plus `port_offset`.
    service_url_template: str | None = None
    # Added to every service's seed port, so a second platform (tests) can run beside `make up`.
    port_offset: int = 0

    # Shared by the services to obtain `service` tokens from auth; change it outside development.
    service_secret: SecretStr = SecretStr("laku-dev-service-secret")
    admin_email: str = "admin@laku.id"
    admin_password: SecretStr = SecretStr("laku-admin-demo")
    admin_name: str = "Laku Admin"

    jwt_issuer: str = "laku-auth"
    jwt_audience: str = "laku"
    # Access tokens live briefly; a refresh token (one use each, rotated) renews them. A
    # session needs a new login after `refresh_token_ttl_seconds` unused or
    # `session_max_seconds` in all (OWASP ASVS L2 3.3.2: 30 minutes idle, 12 hours).
    access_token_ttl_seconds: int = 900
    service_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 1800
    session_max_seconds: int = 43_200
    # Every service process asks auth for the sessions logged out since it last asked, this
    # often: a revoked token is refused everywhere within about this long.
    revocation_poll_interval_seconds: float = 2.0
    # Auth processes reload the signing keys this often, so `laku keys rotate` takes effect
    # without a restart.
    signing_key_reload_seconds: float = 2.0
    # Encrypts the signing keys' private halves in auth's table (AES-256-GCM under a key derived
    # from it). No default: auth refuses to start without it.
    signing_key_encryption_key: SecretStr | None = None

    # Argon2 cost of password hashes; the defaults are argon2-cffi's. Tests lower them.
    password_hash_time_cost: int = 3
    password_hash_memory_kib: int = 65_536

    login_max_failures: int = 5
    login_lockout_seconds: int = 900

    # What is kept only for a while is deleted by each service process every
    # `retention_interval_seconds` (0: never): outbox rows delivered more than
    # `outbox_retention_hours` ago (pending and dead-lettered rows are kept), idempotency keys
    # older than `idempotency_key_retention_hours`, and auth's stale login-throttle rows.
    retention_interval_seconds: float = 3600
    outbox_retention_hours: float = 168
    idempotency_key_retention_hours: float = 24

    max_body_bytes: int = 1_048_576
    http_timeout_seconds: float = 5.0
    log_level: str = "INFO"
    log_json: bool = False

    # Traces (OpenTelemetry): exported over OTLP/HTTP to this endpoint when set (the standard
    # `OTEL_EXPORTER_OTLP_ENDPOINT` works too), otherwise not recorded beyond the trace ids
    # carried on calls and log lines. `trace_dir`: every finished span appended as one JSON line
    # to a file per process in this folder, for local debugging and the test suite.
    otlp_endpoint: str | None = None
    trace_dir: Path | None = None

    # Notification providers. Left unset, the clients talk to the local sandboxes (which accept
    # these defaults); real keys and hosts switch them to WhatsApp Cloud API and a real SMTP relay.
    whatsapp_api_base_url: str | None = None  # None: the whatsapp-sandbox; real: graph.facebook.com
    whatsapp_api_version: str = "v21.0"
    whatsapp_phone_number_id: str = "100000000000001"
    whatsapp_access_token: SecretStr = SecretStr("laku-dev-whatsapp-token")
    smtp_host: str | None = None  # None: `host`, where the smtp-sandbox listens
    smtp_port: int | None = None  # None: the smtp-sandbox's sink, 2525 + port_offset
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    mail_from: str = "Laku <no-reply@laku.id>"
    # Web Push: the VAPID key pair's private half (a P-256 key, raw 32 bytes in base64url, or
    # DER); the public half is derived and given to browsers. This one is for development only.
    webpush_vapid_private_key: SecretStr = SecretStr("QhJ1cOLW8bjtoq3R8lb7bgu0UQvXPd03w1RBCehIGec")
    # Who push services may contact about our pushes (the VAPID `sub` claim).
    webpush_subject: str = "mailto:admin@laku.id"

    # Xendit (invoices, invoice webhooks). Left unset, the client talks to the xendit-sandbox,
    # which accepts these defaults; a real secret key and base URL switch it to Xendit.
    xendit_api_base_url: str | None = None  # None: the xendit-sandbox; real: https://api.xendit.co
    xendit_secret_key: SecretStr = SecretStr("xnd_development_laku_sandbox_key")
    # Xendit sends it as `x-callback-token` on every webhook; payment-service checks it.
    xendit_callback_token: SecretStr = SecretStr("laku-dev-xendit-callback-token")
    # Where invoice webhooks go; None: payment-service's /api/payments/webhook.
    xendit_webhook_url: str | None = None
    invoice_duration_seconds: int = 86_400
    # Where the checkout sends the buyer back once the invoice is paid or over; None: the web's
    # "my group buys" (its local address: set the public one outside development).
    payment_return_url: str | None = None
    # Xendit does not always send EXPIRED: each payment-service process reads back from Xendit
    # the pending payments past their expiry every this many seconds (0: never).
    overdue_payment_sweep_interval_seconds: float = 60

    # Xendit payouts (wallet withdrawals), with the same key and callback token as invoices.
    # Where payout webhooks go; None: wallet-service's /api/wallets/payouts/webhook.
    xendit_payout_webhook_url: str | None = None

    # Warehouse: what the factory charges to ship one bundle, added to every purchase order.
    purchase_order_shipping_cost_per_bundle: int = 25_000
    # A received purchase order's warehouse invoice: PPN on goods and shipping (basis points,
    # 11%) and the days until it is due.
    warehouse_invoice_ppn_bps: int = 1100
    warehouse_invoice_due_days: int = 30
    # Where parcels to buyers leave from: the origin of every shipping rate and shipment. The
    # seed's rates example ships from Bandung (40123) to Jakarta (12190).
    warehouse_name: str = "Gudang Laku Bandung"
    warehouse_phone: str = "+62222501234"
    warehouse_address: str = "Jl. Surapati No. 120, Sukaluyu, Cibeunying Kaler, Bandung"
    warehouse_postal_code: str = "40123"

    # Biteship (shipping rates, orders, tracking). Left unset, the client talks to the
    # biteship-sandbox, which accepts these defaults; a real API key and base URL switch it to
    # Biteship. Biteship sends `webhook_secret` in the header logistics-service checks.
    biteship_api_base_url: str | None = None  # None: the biteship-sandbox; real: api.biteship.com
    biteship_api_key: SecretStr = SecretStr("biteship_test_laku_sandbox_key")
    biteship_webhook_secret: SecretStr = SecretStr("laku-dev-biteship-webhook-secret")
    # Where status webhooks go; None: logistics-service's /api/shipments/webhook.
    biteship_webhook_url: str | None = None
    # What one unit of an order weighs in its parcel, for rates and shipments (catalogue
    # products carry no weight).
    shipping_weight_per_unit_grams: int = 300
    # The couriers a group buy's parcels are booked with when the buyer chose none: the
    # cheapest of their services (JSON list in the environment: '["jne","jnt","sicepat"]').
    shipping_couriers: list[str] = ["jne", "jnt", "sicepat"]

    # Product photos, sized for phones by product-service: kept under `media_dir` (None:
    # `data_dir`/media), which the web front end serves at /media, and linked as
    # `media_base_url` (None: the web front end's own URL + /media).
    media_dir: Path | None = None
    media_base_url: str | None = None
    # In S3-compatible object storage instead when `media_s3_bucket` is set (AWS S3 unless
    # `media_s3_endpoint_url` names another: MinIO, R2...), linked from `media_base_url` (None:
    # the bucket's own URL; a CDN's in front of it in production).
    media_s3_bucket: str | None = None
    media_s3_endpoint_url: str | None = None
    media_s3_region: str = "ap-southeast-3"  # Jakarta
    media_s3_access_key_id: str | None = None
    media_s3_secret_access_key: SecretStr | None = None

    # Settlement: the platform's fee on what a factory's successful sessions released.
    platform_fee_bps: int = 500

    # Group-buying closes sessions past their end time (design 7 "Close"): each group-buying
    # process runs process-expired every `close_interval_seconds` (0: only when it is called).
    # A close holds its session for `close_claim_lease_seconds`, renewed while it works, so a
    # process that dies mid-close leaves the session to the next run once that has passed.
    close_interval_seconds: float = 60
    close_claim_lease_seconds: float = 10

    # Stock and money never stranded (design 15). A warehouse reservation is a hold that lapses
    # unless confirmed (a paid join): at most `reservation_hold_seconds` (no longer than an
    # invoice lives), released by warehouse-service's sweeper every
    # `reservation_sweep_interval_seconds`. A join's hold ends `reservation_hold_grace_seconds`
    # after its invoice expires, room for a late webhook; group-buying cancels joins whose hold
    # has lapsed unpaid every `join_sweep_interval_seconds` (0 turns either sweeper off).
    reservation_hold_seconds: int = 86_400
    reservation_hold_grace_seconds: int = 600
    reservation_sweep_interval_seconds: float = 60
    join_sweep_interval_seconds: float = 60

    def database_url_for(self, service: str) -> str | None:
        """The service's own database if it has one, else the shared one."""
        return self.database_urls.get(service) or self.database_url


@lru_cache
def get_settings() -> Settings:
    return Settings()
