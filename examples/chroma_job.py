"""A Chroma reader job, unmodified apart from reading its store from the environment.

Run under `jitgate run --connection chroma-dev`: CHROMA_HOST/PORT/SSL name the store, CHROMA_API_KEY
holds the JIT token (sent as `x-chroma-token`), and the proxy variables take the calls through the
gateway. Prints one `STEP {json}` line per thing the demo checks.
"""

from __future__ import annotations

import json
import os

import chromadb
from chromadb.config import Settings


def step(name: str, **data: object) -> None:
    print("STEP " + json.dumps({"step": name, **data}), flush=True)


client = chromadb.HttpClient(
    host=os.environ["CHROMA_HOST"],
    port=int(os.environ["CHROMA_PORT"]),
    ssl=os.environ["CHROMA_SSL"] == "true",
    headers={"x-chroma-token": os.environ["CHROMA_API_KEY"]},
    settings=Settings(anonymized_telemetry=False),
)
candidates = client.get_collection("candidates")
# the seed's recruiter document holds an e-mail address (jitgate.devstack.chroma.SEED)
got = candidates.get(ids=["c3"], include=["documents", "metadatas"])
step("store_answered", count=candidates.count(), documents=got["documents"], metadatas=got["metadatas"])
try:
    client.get_collection("secrets")
    step("other_collection", refused=False)
except Exception as exc:  # the gateway's 403, as the client raises it
    step("other_collection", refused="collection_not_allowed" in str(exc))
