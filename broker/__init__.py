"""The broker Lambda: OIDC-checked, KMS-signed just-in-time tokens."""
