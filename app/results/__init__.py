"""Post-call results: a summary and an extraction per archived call, and signed webhooks that carry them."""
