"""An ordinary rerank job: the unmodified `cohere` SDK on its default URL, reading CO_API_KEY.

It knows nothing about jitgate. Run under `jitgate run`, CO_API_KEY holds a JIT token and
HTTPS_PROXY points at the gateway, which swaps in the real key, masks and blocks. The lines it
prints starting with `STEP` are what `make demo` checks.
"""

from __future__ import annotations

import json
import os
import secrets
import string

import cohere

DOCUMENTS = [
    "Reranking orders retrieved passages by their relevance to the query.",
    "Contact the search team at ranking-team@example.com for relevance questions.",
    "Blue whales are the largest animals known to have lived.",
    "A cross-encoder reranker reads the query and the passage together.",
]


def step(name: str, **fields: object) -> None:
    print("STEP " + json.dumps({"step": name, **fields}), flush=True)


def main() -> None:
    co = cohere.Client()  # CO_API_KEY from the environment; the vendor's default URL
    answer = co.rerank(
        model="rerank-v3.5",
        query="how does a reranker order passages?",
        documents=DOCUMENTS,
        top_n=4,
        return_documents=True,
    )
    ranking = [r.index for r in answer.results]
    texts = [r.document.text if r.document else "" for r in answer.results]
    step("rerank_answered", ranking=ranking, top=texts[0])
    step("email_in_returned_document", documents=[t for t in texts if "team" in t])

    # A careless pipeline pastes a credential into a candidate passage. (Made up here, at run time.)
    fake_key = "AKIA" + "".join(secrets.choice(string.ascii_uppercase + "234567") for _ in range(16))
    try:
        co.rerank(model="rerank-v3.5", query="deploy notes", documents=[f"aws_access_key_id = {fake_key}"])
        step("leak_forwarded")
    except cohere.core.ApiError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        step("leak_blocked", status=exc.status_code, code=body.get("code"), echoed=fake_key in json.dumps(body))

    token_file = os.environ.get("DEMO_TOKEN_FILE")
    if token_file:  # only so the demo can show the token refused after the job; never do this for real
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(os.environ["CO_API_KEY"])


if __name__ == "__main__":
    main()
