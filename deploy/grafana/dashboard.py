"""The fewstep Grafana dashboard as code (grafanalib); `dashboards/fewstep.json` is its output.

Regenerate after editing:  .venv/bin/python deploy/grafana/dashboard.py > deploy/grafana/dashboards/fewstep.json
(tests/deploy/test_grafana.py fails while the committed JSON differs from this file's output, and
checks that every metric a query names is one the live service exports.)

Panels: request rate, errors and rejections, p50/p95/p99 latency, queue depth, batch size
distribution, images per second, batch compute time, in-flight requests and readiness; and the
latency objective (docs/slo.md): the share of requests over it, downgrades by reason and model,
predicted against observed latency, and the controller's pressure. The datasource is the
provisioned Prometheus (uid `prometheus`, provisioning/datasources/).
"""

from __future__ import annotations

import io

from grafanalib._gen import write_dashboard
from grafanalib.core import (
    Dashboard,
    GridPos,
    Heatmap,
    Stat,
    Target,
    Time,
    TimeSeries,
)

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
GENERATE_ROUTES = 'route=~"/generate|/v1/images/generations"'
WIDTH, HEIGHT = 12, 8


def target(expr: str, legend: str, ref: str) -> Target:
    return Target(expr=expr, legendFormat=legend, refId=ref, datasource=DATASOURCE)


def timeseries(title: str, targets: list[Target], unit: str, x: int, y: int, description: str) -> TimeSeries:
    return TimeSeries(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets,
        unit=unit,
        gridPos=GridPos(h=HEIGHT, w=WIDTH, x=x, y=y),
        legendDisplayMode="table",
        legendCalcs=["mean", "max", "lastNotNull"],
    )


def quantile(q: float, ref: str) -> Target:
    expr = (
        f"histogram_quantile({q}, sum by (le) "
        f"(rate(fewstep_http_request_duration_seconds_bucket{{{GENERATE_ROUTES}}}[$__rate_interval])))"
    )
    return target(expr, f"p{round(q * 100)}", ref)


def slo_quantile(metric: str, q: float, legend: str, ref: str) -> Target:
    expr = f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket[$__rate_interval])))"
    return target(expr, legend, ref)


def slo_panels(y: int) -> list[TimeSeries]:
    """The latency objective (FEWSTEP_SLO__P99_MS): empty while none is set."""
    return [
        timeseries(
            "Latency objective: requests over it",
            [
                target(
                    "sum(rate(fewstep_slo_violations_total[$__rate_interval])) "
                    "/ sum(rate(fewstep_slo_requests_total[$__rate_interval]))",
                    "over the objective",
                    "A",
                ),
                target(
                    'sum(rate(fewstep_routing_total{reason!="as_asked"}[$__rate_interval])) '
                    "/ sum(rate(fewstep_routing_total[$__rate_interval]))",
                    "moved to a cheaper model",
                    "B",
                ),
            ],
            "percentunit",
            0,
            y,
            "Share of finished requests over the objective (a p99 objective allows 1%; the FewstepSloViolations "
            "alert fires past it for 10 minutes), and share of admitted requests moved to a cheaper model.",
        ),
        timeseries(
            "Downgrades by reason and model",
            [
                target(
                    "sum by (reason, asked, model, steps) "
                    '(rate(fewstep_routing_total{reason!="as_asked"}[$__rate_interval]))',
                    "{{asked}} -> {{model}}@{{steps}} ({{reason}})",
                    "A",
                )
            ],
            "reqps",
            WIDTH,
            y,
            "Requests served by another model than asked, per second: pressure (cheap quality given up under load), "
            "slo (the asked model was predicted late), unmet (nothing fitted: the fastest), fast (the client's hint).",
        ),
        timeseries(
            "Predicted and observed latency",
            [
                slo_quantile("fewstep_slo_predicted_seconds", 0.99, "p99 predicted at admission", "A"),
                slo_quantile("fewstep_slo_latency_seconds", 0.99, "p99 observed", "B"),
                target("max(fewstep_slo_objective_seconds) > 0", "objective", "C"),
            ],
            "s",
            0,
            y + HEIGHT,
            "The controller's predicted latency (queue + compute) of the model it chose, against what the engine "
            "observed, and the objective.",
        ),
        timeseries(
            "Controller pressure",
            [target("max(fewstep_slo_pressure)", "pressure", "A")],
            "short",
            WIDTH,
            y + HEIGHT,
            "0: every request is served as asked; rising towards 1, quality is given up where it costs least "
            "(one-object prompts first); 1: every downgrade that buys time is taken.",
        ),
    ]


def build() -> Dashboard:
    y = 0
    panels = [
        Stat(
            title="Ready replicas",
            description="Replicas whose /readyz is 200 (fewstep_ready), out of the scraped targets.",
            dataSource=DATASOURCE,
            targets=[target("sum(fewstep_ready)", "ready", "A"), target('count(up{job="fewstep"})', "targets", "B")],
            gridPos=GridPos(h=4, w=6, x=0, y=y),
            reduceCalc="lastNotNull",
        ),
        Stat(
            title="In flight",
            description="Generation requests admitted and not yet answered, all replicas.",
            dataSource=DATASOURCE,
            targets=[target("sum(fewstep_in_flight_requests)", "in flight", "A")],
            gridPos=GridPos(h=4, w=6, x=6, y=y),
            reduceCalc="lastNotNull",
        ),
        Stat(
            title="Images / s",
            description="Images generated per second, all replicas.",
            dataSource=DATASOURCE,
            targets=[target("sum(rate(fewstep_images_generated_total[$__rate_interval]))", "images/s", "A")],
            gridPos=GridPos(h=4, w=6, x=12, y=y),
            reduceCalc="lastNotNull",
            format="short",
            decimals=2,
        ),
        Stat(
            title="Error ratio (5xx)",
            description="Share of generation requests answered with a server error over 5 minutes.",
            dataSource=DATASOURCE,
            targets=[
                target(
                    f'sum(rate(fewstep_http_request_duration_seconds_count{{{GENERATE_ROUTES}, status=~"5.."}}[5m]))'
                    f" / sum(rate(fewstep_http_request_duration_seconds_count{{{GENERATE_ROUTES}}}[5m]))",
                    "5xx ratio",
                    "A",
                )
            ],
            gridPos=GridPos(h=4, w=6, x=18, y=y),
            reduceCalc="lastNotNull",
            format="percentunit",
        ),
    ]
    y += 4
    panels += [
        timeseries(
            "Request rate",
            [
                target(
                    "sum by (route, status) (rate(fewstep_http_request_duration_seconds_count[$__rate_interval]))",
                    "{{route}} {{status}}",
                    "A",
                )
            ],
            "reqps",
            0,
            y,
            "HTTP requests per second by route and status.",
        ),
        timeseries(
            "Errors and rejections",
            [
                target(
                    "sum by (status) (rate(fewstep_http_request_duration_seconds_count"
                    f'{{{GENERATE_ROUTES}, status=~"[45].."}}[$__rate_interval]))',
                    "HTTP {{status}}",
                    "A",
                ),
                target(
                    "sum by (reason) (rate(fewstep_requests_rejected_total[$__rate_interval]))",
                    "rejected: {{reason}}",
                    "B",
                ),
                target(
                    "sum(rate(fewstep_batch_failures_total[$__rate_interval]))",
                    "failed batches",
                    "C",
                ),
            ],
            "reqps",
            WIDTH,
            y,
            "4xx/5xx answers of the generation routes, refusals by reason, and batches whose backend call raised.",
        ),
    ]
    y += HEIGHT
    panels += [
        timeseries(
            "Latency (generation routes)",
            [quantile(0.5, "A"), quantile(0.95, "B"), quantile(0.99, "C")],
            "s",
            0,
            y,
            "p50 / p95 / p99 of /generate and /v1/images/generations, receipt to last byte.",
        ),
        timeseries(
            "Queue depth",
            [
                target("sum(fewstep_queue_depth_requests)", "requests", "A"),
                target("sum(fewstep_queue_depth_images)", "images", "B"),
                target(
                    "histogram_quantile(0.95, sum by (le) (rate(fewstep_queue_wait_seconds_bucket[$__rate_interval])))",
                    "p95 queue wait (s)",
                    "C",
                ),
            ],
            "short",
            WIDTH,
            y,
            "Requests and images waiting for a batch (all replicas), and the p95 time spent waiting.",
        ),
    ]
    y += HEIGHT
    panels += [
        Heatmap(
            title="Batch size distribution",
            description="Images per batch run by the backend (fewstep_batch_size_images buckets).",
            dataSource=DATASOURCE,
            targets=[
                Target(
                    expr="sum by (le) (increase(fewstep_batch_size_images_bucket[$__rate_interval]))",
                    legendFormat="{{le}}",
                    refId="A",
                    format="heatmap",
                    datasource=DATASOURCE,
                )
            ],
            dataFormat="tsbuckets",
            gridPos=GridPos(h=HEIGHT, w=WIDTH, x=0, y=y),
        ),
        timeseries(
            "Images per second and batch compute time",
            [
                target(
                    "sum by (model) (rate(fewstep_images_generated_total[$__rate_interval]))", "{{model}} images/s", "A"
                ),
                target(
                    "histogram_quantile(0.5, sum by (le) "
                    "(rate(fewstep_batch_compute_seconds_bucket[$__rate_interval])))",
                    "p50 batch compute (s)",
                    "B",
                ),
            ],
            "short",
            WIDTH,
            y,
            "Throughput by model, and the median backend time of one batch (all steps).",
        ),
    ]
    y += HEIGHT
    panels += slo_panels(y)
    return Dashboard(
        title="fewstep",
        uid="fewstep",
        description="Few-step text-to-image service: traffic, errors, latency, queue and batching.",
        tags=["fewstep"],
        timezone="browser",
        refresh="10s",
        time=Time("now-1h", "now"),
        panels=panels,
    ).auto_panel_ids()


def render() -> str:
    out = io.StringIO()
    write_dashboard(build(), out)
    return out.getvalue()


if __name__ == "__main__":
    print(render(), end="")
