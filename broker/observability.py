"""The broker's Logger and Metrics, shared by the handler and the route modules."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics

SERVICE = "jitgate-broker"
logger = Logger(service=SERVICE)
metrics = Metrics(namespace="jitgate", service=SERVICE)
