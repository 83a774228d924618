"""Prometheus metrics of one app, in their own registry (so tests can build many apps).

Base units (seconds, images), histograms whose buckets reach past the 60 s default deadline (the
client library's defaults stop at 10 s, which would put every slow request in +Inf), and labels
with bounded values only: route templates (never raw paths), status codes, the names of loaded
models (anything else is "unknown") and fixed rejection reasons. Prompts never become labels.

The latency objective (`service.engine.slo`): `fewstep_slo_requests_total` and
`fewstep_slo_violations_total` (finished requests, and those over the objective, by serving model:
their ratio is what the alert watches), `fewstep_routing_total` (every admitted request by the
model asked for, the model and steps serving it and the reason: anything but `as_asked` is a
downgrade), the predicted and observed latency histograms (`fewstep_slo_predicted_seconds`,
`fewstep_slo_latency_seconds`), the objective and the controller's pressure as gauges.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.pipeline import Pipeline

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS_IMAGES = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# The only values the `reason` label of the rejection counter takes.
REJECT_REASONS = (
    "invalid",
    "unauthorized",
    "unknown_model",
    "too_large",
    "body_timeout",
    "queue_full",
    "not_ready",
    "draining",
    "deadline",
    "disconnected",
    "backend_error",
    "over_objective",
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Every metric the service exports; the engine and the HTTP layer update them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_duration = Histogram(
            "fewstep_http_request_duration_seconds",
            "HTTP request duration from receipt to the last byte of the response.",
            ["route", "status", "model"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.queue_wait = Histogram(
            "fewstep_queue_wait_seconds",
            "Time a request waited in the queue before its batch started (step-level: its first image admitted).",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_size = Histogram(
            "fewstep_batch_size_images",
            "Images in each batch run by the backend.",
            ["model"],
            buckets=BATCH_BUCKETS_IMAGES,
            registry=r,
        )
        self.batch_compute = Histogram(
            "fewstep_batch_compute_seconds",
            "Backend time to generate one batch (all steps).",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.step_iterations = Counter(
            "fewstep_step_iterations_total",
            "Denoiser evaluations of step-level scheduling (each serves every in-flight image once).",
            ["model"],
            registry=r,
        )
        self.step_iteration_seconds = Histogram(
            "fewstep_step_iteration_seconds",
            "Backend time of one step-level iteration.",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.in_flight_images = Gauge(
            "fewstep_in_flight_images", "Images inside the running step-level batch.", ["model"], registry=r
        )
        self.images = Counter("fewstep_images_generated_total", "Images generated.", ["model"], registry=r)
        self.batch_failures = Counter(
            "fewstep_batch_failures_total", "Batches whose backend call raised.", ["model"], registry=r
        )
        self.rejected = Counter(
            "fewstep_requests_rejected_total", "Requests refused or dropped, by reason.", ["reason"], registry=r
        )
        self.queue_depth = Gauge("fewstep_queue_depth_requests", "Requests waiting in the queue.", registry=r)
        self.queue_images = Gauge("fewstep_queue_depth_images", "Images waiting in the queue.", registry=r)
        self.in_flight = Gauge(
            "fewstep_in_flight_requests", "Generation requests admitted and not yet answered.", registry=r
        )
        self.ready = Gauge("fewstep_ready", "1 when warmed up and admitting requests, else 0.", registry=r)
        self.model_info = Gauge(
            "fewstep_model_info",
            "Loaded models (value 1) with their resolution, step counts and backend.",
            ["model", "resolution", "steps", "backend", "guidance_in_network"],
            registry=r,
        )
        self.slo_objective = Gauge(
            "fewstep_slo_objective_seconds",
            "The latency objective (FEWSTEP_SLO__P99_MS) in seconds; 0 when none is set.",
            registry=r,
        )
        self.slo_requests = Counter(
            "fewstep_slo_requests_total",
            "Generation requests finished (answered, or past their deadline) while an objective is set.",
            ["model"],
            registry=r,
        )
        self.slo_violations = Counter(
            "fewstep_slo_violations_total",
            "Finished requests over the objective: queue + compute past it, or past their deadline.",
            ["model"],
            registry=r,
        )
        self.routing = Counter(
            "fewstep_routing_total",
            "Admitted requests by the model asked for, the model and steps serving them and why "
            "(as_asked; downgrades: pressure, slo, unmet, fast).",
            ["reason", "asked", "model", "steps"],
            registry=r,
        )
        self.slo_predicted = Histogram(
            "fewstep_slo_predicted_seconds",
            "Latency (queue + compute) predicted at admission for the option chosen, by serving model.",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.slo_latency = Histogram(
            "fewstep_slo_latency_seconds",
            "Latency (queue + compute) observed in the engine, by serving model (beside the predicted).",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.slo_pressure = Gauge(
            "fewstep_slo_pressure",
            "The latency controller's pressure: 0 serves as asked; towards 1, quality is given up where cheapest.",
            registry=r,
        )
        for reason in REJECT_REASONS:  # export zeros so rate() and alerts see every series from the start
            self.rejected.labels(reason)

    def add_models(self, pipelines: list[Pipeline]) -> None:
        """Record the loaded models; their names become the only accepted `model` label values."""
        for p in pipelines:
            m = p.manifest
            self.model_info.labels(
                p.name,
                str(m.resolution),
                ",".join(str(k) for k in sorted(m.steps)),
                p.backend,
                str(m.guidance.network_input).lower(),
            ).set(1)
            self.images.labels(p.name)
            self.in_flight_images.labels(p.name)
            self.batch_failures.labels(p.name)
            self.slo_requests.labels(p.name)
            self.slo_violations.labels(p.name)
            self.routing.labels("as_asked", p.name, p.name, str(m.default_steps))
            self.slo_predicted.labels(p.name)
            self.slo_latency.labels(p.name)

    def routed(
        self, asked: str, model: str, steps: int, reason: str, predicted_s: float | None, pressure: float
    ) -> None:
        """An admitted request's routing (model names are the loaded ones; reasons a fixed set)."""
        self.routing.labels(reason, asked, model, str(steps)).inc()
        if predicted_s is not None:
            self.slo_predicted.labels(model).observe(predicted_s)
        self.slo_pressure.set(pressure)

    def finished(self, model: str, latency_s: float | None, objective_s: float) -> None:
        """A request finished on `model` after `latency_s` (None: past its deadline), held to `objective_s`."""
        self.slo_requests.labels(model).inc()
        if latency_s is not None:
            self.slo_latency.labels(model).observe(latency_s)
        if latency_s is None or latency_s > objective_s:
            self.slo_violations.labels(model).inc()

    def reject(self, reason: str) -> None:
        self.rejected.labels(reason if reason in REJECT_REASONS else "invalid").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
