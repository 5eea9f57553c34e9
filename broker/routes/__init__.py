"""HTTP routes of the broker, one Router per concern."""
