"""Shipped scenarios (YAML); ``clearsim scenarios`` lists them."""
