"""The webhooks service: subscriptions, signed deliveries with retries, and the event feed."""
