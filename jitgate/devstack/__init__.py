"""Local stand-ins for the cloud parts, for tests, the demo and `jitgate dev`.

`aws` seeds a moto server with the broker's KMS key, table, bucket, topic and secrets;
`oidc_issuer` is an OIDC identity provider on loopback with a real RSA key; `policy` writes
the example-style policy those two serve; `upstream` is the HTTPS rerank upstream.
Nothing here is used in production code paths.
"""
