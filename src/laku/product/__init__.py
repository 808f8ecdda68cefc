"""product-service (port 3002): products, variants, categories, images."""
