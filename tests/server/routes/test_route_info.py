"""Health, readiness, model and voice listings, metrics and the demo page, through TestClient."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from serverkit import metric_value


def test_health_and_readiness(app_client: TestClient) -> None:
    assert app_client.get("/healthz").json() == {"status": "ok"}
    r = app_client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["ready"] and not body["draining"]
    assert all(w["state"] == "ready" and w["capacity"] >= 1 for w in body["workers"])


def test_models_card(app_client: TestClient, tiny_model_dir) -> None:
    body = app_client.get("/v1/models").json()
    assert body["object"] == "list" and len(body["data"]) == 1
    card = body["data"][0]
    assert card["id"] == tiny_model_dir.name and card["object"] == "model"
    assert card["hyperparameters"]["hidden_size"] == 64 and card["hyperparameters"]["n_mels"] == 80
    assert card["sparsity"]["block"] and card["sparsity"]["density"]
    assert card["trained"] is False and card["isa"]
    assert card["workers"] and all(
        w["us_per_sample"] > 0 and w["kernel_us_per_sample"] > 0 for w in card["workers"]
    )


def test_model_retrieve_by_id(app_client: TestClient, tiny_model_dir) -> None:
    card = app_client.get(f"/v1/models/{tiny_model_dir.name}").json()
    assert card["id"] == tiny_model_dir.name and card["object"] == "model"
    for alias in ("sparrow", "tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15"):
        alias_card = app_client.get(f"/v1/models/{alias}").json()
        assert alias_card["id"] == alias and alias_card["root"] == tiny_model_dir.name
    r = app_client.get("/v1/models/gpt-9")
    err = r.json()["error"]
    assert r.status_code == 404 and err["code"] == "model_not_found" and err["param"] == "model"


def test_audio_models_and_voices_discovery(app_client: TestClient, tiny_model_dir) -> None:
    """The shapes chat front ends read from a custom OpenAI speech server."""
    models = app_client.get("/v1/audio/models").json()
    ids = [m["id"] for m in models["models"]]
    assert ids[0] == tiny_model_dir.name and {"tts-1", "gpt-4o-mini-tts", "sparrow"} <= set(ids)
    voices = app_client.get("/v1/audio/voices").json()["voices"]
    assert [v["id"] for v in voices] == ["slt"] and voices[0]["name"]
    # every listed model id is accepted by the speech route
    for model in ids:
        r = app_client.post(
            "/v1/audio/speech",
            json={
                "model": model,
                "input": "Hi.",
                "voice": voices[0]["id"],
                "response_format": "pcm",
            },
        )
        assert r.status_code == 200, (model, r.text)


def test_voices(app_client: TestClient) -> None:
    body = app_client.get("/v1/voices").json()
    assert body["default"] == "slt" and body["text_available"] is True
    slt = next(v for v in body["data"] if v["id"] == "slt")
    assert slt["language"].startswith("en") and slt["sample_rate"] == 24000


def test_metrics_parse_and_move(
    app_client: TestClient, make_mel: Callable[..., np.ndarray]
) -> None:
    before = app_client.get("/metrics").text
    assert app_client.post("/v1/synthesize", json={"mel": make_mel(12).tolist()}).status_code == 200
    after = app_client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    families = {f.name for f in text_string_to_metric_families(after.text)}
    assert "sparrow_sample_duration_seconds" in families
    for name in (
        "sparrow_sample_duration_seconds_count",
        "sparrow_samples_generated_total",
        "sparrow_worker_busy_seconds_total",
        "sparrow_queue_wait_seconds_count",
        "sparrow_real_time_factor_count",
    ):
        assert metric_value(after.text, name) > metric_value(before, name), name
    route = {"route": "/v1/synthesize"}
    assert metric_value(
        after.text, "sparrow_time_to_first_audio_seconds_count", route
    ) > metric_value(before, "sparrow_time_to_first_audio_seconds_count", route)
    assert metric_value(after.text, "sparrow_requests_total", {**route, "status": "200"}) >= 1
    assert (
        metric_value(after.text, "sparrow_samples_generated_total")
        - metric_value(before, "sparrow_samples_generated_total")
        == 12 * 300
    )


def test_unknown_paths_are_json_404_and_not_a_metric_label(app_client: TestClient) -> None:
    r = app_client.get("/wp-admin/../etc/passwd")
    assert r.status_code == 404 and "error" in r.json()
    assert 'route="/wp-admin' not in app_client.get("/metrics").text


def test_demo_page_is_served(app_client: TestClient) -> None:
    r = app_client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert app_client.get("/static/app.js").status_code == 200
