"""The REST contract as data and documents: routes from the descriptor set, OpenAPI from them."""
