"""Platform settings, read from `LAKU_*` environment variables (and `.env`)."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Rate(BaseModel):
    """At most `limit` in any window of `seconds` (a window opens at its first hit)."""

    limit: int
    seconds: int


class RateLimits(BaseModel):
    """Per client address and per account, kept in each service's own schema so every process
    counts together; over a limit is a 429 with `Retry-After`. In the environment as JSON,
    naming only the limits that change: `LAKU_RATE_LIMITS='{"join_per_buyer": {"limit": 60,
    "seconds": 60}}'`.

    Logins (OWASP ASVS 2.2.1): failures are counted before the password is checked, per
    (account, address) (`login_max_failures` per `login_lockout_seconds`, cleared by a
    success), so guesses from one address lock out only that address, never the owner
    elsewhere; per address across accounts (credential stuffing); and per account across all
    addresses with a much higher ceiling, so distributed guessing gets at most
    `login_failures_per_account` tries an hour. Reaching that ceiling does lock the owner out
    until the hour ends: it takes a sustained attack from many addresses, and is the price of
    bounding it."""

    login_per_address: Rate = Rate(limit=60, seconds=60)
    login_failures_per_address: Rate = Rate(limit=30, seconds=900)
    login_failures_per_account: Rate = Rate(limit=100, seconds=3600)
    register_per_address: Rate = Rate(limit=10, seconds=3600)
    register_per_email: Rate = Rate(limit=5, seconds=3600)
    join_per_address: Rate = Rate(limit=60, seconds=60)
    join_per_buyer: Rate = Rate(limit=20, seconds=60)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAKU_", env_file=".env", extra="ignore")

    # Design 14. development: `laku up` and `laku serve` generate every secret not set into
    # `data_dir`/secrets and load demo data. production: nothing is generated, a process refuses
    # to start while a secret is unset, short or a published demo value, and no demo data.
    # Every secret below (`SecretStr | None`) has no value in code; laku.core.secrets checks them.
    env: Literal["development", "production"] = "development"

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

    # Auth-service checks each service's credential against it (`service_credential` below).
    service_secret: SecretStr | None = None
    # This process's own service credential, HMAC-SHA256(service_secret, service name) (README,
    # "Service identities"). Set, the process needs no `service_secret` to obtain tokens: give
    # each service's process only its own. Unset: derived from `service_secret`.
    service_credential: SecretStr | None = None
    # The first admin account, created at auth's start if missing. The e-mail must pass the rule
    # login applies (a reserved domain such as `.test` does not), or no process starts.
    admin_email: str = "admin@laku.id"
    admin_password: SecretStr | None = None
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

    # Failed logins per (account, client address) before that pair is refused for the rest of
    # `login_lockout_seconds`; the other limits are in `rate_limits`.
    login_max_failures: int = 5
    login_lockout_seconds: int = 900
    rate_limits: RateLimits = RateLimits()
    # Proxies whose X-Forwarded-For names the client (addresses or networks, JSON list in the
    # environment); anyone else's is ignored and the connection's own address counts. The web
    # front end calls the services from the same host, so loopback is trusted by default.
    trusted_proxies: list[str] = ["127.0.0.1", "::1"]
    # A buyer's units awaiting payment in one group buy, over all their joins: stock held by
    # unpaid joins is bounded per account (and those holds lapse with their invoices).
    max_unpaid_units_per_buyer_per_session: int = 100

    # What is kept only for a while is deleted by each service process every
    # `retention_interval_seconds` (0: never): outbox rows delivered more than
    # `outbox_retention_hours` ago (pending and dead-lettered rows are kept), idempotency keys
    # older than `idempotency_key_retention_hours`, and rate-limit counters whose window ended.
    retention_interval_seconds: float = 3600
    outbox_retention_hours: float = 168
    idempotency_key_retention_hours: float = 24
    # The HMAC key of idempotency fingerprints: a stored fingerprint of a body holding a password
    # cannot be tested against guesses without it.
    idempotency_key_secret: SecretStr | None = None

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

    # Notification providers. Left unset, the clients talk to the local sandboxes (which run with
    # the same settings, so accept the same keys); real keys and hosts switch them to WhatsApp
    # Cloud API and a real SMTP relay.
    whatsapp_api_base_url: str | None = None  # None: the whatsapp-sandbox; real: graph.facebook.com
    whatsapp_api_version: str = "v21.0"
    whatsapp_phone_number_id: str = "100000000000001"
    whatsapp_access_token: SecretStr | None = None
    smtp_host: str | None = None  # None: `host`, where the smtp-sandbox listens
    smtp_port: int | None = None  # None: the smtp-sandbox's sink, 2525 + port_offset
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    mail_from: str = "Laku <no-reply@laku.id>"
    # Web Push: the VAPID key pair's private half (a P-256 key, raw 32 bytes in base64url, or
    # DER); the public half is derived and given to browsers.
    webpush_vapid_private_key: SecretStr | None = None
    # Who push services may contact about our pushes (the VAPID `sub` claim).
    webpush_subject: str = "mailto:admin@laku.id"

    # Xendit (invoices, invoice webhooks). Left unset, the client talks to the xendit-sandbox,
    # which checks the same key; a real secret key and base URL switch it to Xendit.
    xendit_api_base_url: str | None = None  # None: the xendit-sandbox; real: https://api.xendit.co
    xendit_secret_key: SecretStr | None = None
    # Xendit sends it as `x-callback-token` on every webhook; payment-service checks it.
    xendit_callback_token: SecretStr | None = None
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
    # biteship-sandbox, which checks the same key; a real API key and base URL switch it to
    # Biteship. Biteship sends `webhook_secret` in the header logistics-service checks.
    biteship_api_base_url: str | None = None  # None: the biteship-sandbox; real: api.biteship.com
    biteship_api_key: SecretStr | None = None
    biteship_webhook_secret: SecretStr | None = None
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
