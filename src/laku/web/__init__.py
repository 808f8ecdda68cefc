"""web: the storefront (`/`), the admin console (`/admin`) and the factory portal (`/factory`)."""
