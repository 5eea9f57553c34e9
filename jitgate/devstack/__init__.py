"""Local stand-ins for the cloud parts, for tests, the demo and `jitgate dev`.

- `aws`: seeds a moto server (run as a child process) with the broker's KMS key, table,
  bucket, topic and secrets; starts the broker's local adapter.
- `oidc_issuer`: an OIDC identity provider on loopback with real RSA keys.
- `policy`: the example-style policy those serve; `process`: child servers that print a URL.
- `upstream`, `gateway`, `stack`: the HTTPS rerank upstream, the gateway, the whole stack.

Nothing here is used on a production code path (the broker bundle leaves it out).
"""
