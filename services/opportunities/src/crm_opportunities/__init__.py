"""The opportunities service. Everything it shares with its sibling lives in crm_pipeline."""
