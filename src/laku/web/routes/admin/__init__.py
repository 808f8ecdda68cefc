"""The admin console (`/admin`), one module an area: the dashboard, the catalog and its stock,
group buys and purchase orders, orders, and the money. Every rule stays in the services; a
refusal is shown on the form it came from."""
