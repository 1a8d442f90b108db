"""Metric names/types/labels follow docs/protocol.md; exposition parses; frames are recorded."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from server.metrics import SAMPLE_BUCKETS, Metrics

CONTRACT = {
    "sparrow_sample_duration_seconds": "histogram",
    "sparrow_samples_generated": "counter",
    "sparrow_worker_busy_seconds": "counter",
    "sparrow_time_to_first_audio_seconds": "histogram",
    "sparrow_request_duration_seconds": "histogram",
    "sparrow_queue_wait_seconds": "histogram",
    "sparrow_real_time_factor": "histogram",
    "sparrow_streams_in_flight": "gauge",
    "sparrow_stream_capacity": "gauge",
    "sparrow_measured_sample_seconds": "gauge",
    "sparrow_streams_refused": "counter",
    "sparrow_late_frames": "counter",
    "sparrow_frames_redrawn": "counter",
    "sparrow_clipped_frames": "counter",
    "sparrow_requests": "counter",
    "sparrow_worker_restarts": "counter",
    "sparrow_frontend_sentence_seconds": "histogram",
    "sparrow_frontend_processes": "gauge",
}


def test_every_contract_metric_is_exposed_with_its_type() -> None:
    m = Metrics()
    m.init_core(0)
    m.time_to_first_audio.labels(route="/v1/synthesize").observe(0.01)
    m.request_duration.labels(route="/v1/synthesize").observe(0.1)
    m.streams_refused.labels(reason="capacity").inc()
    m.requests.labels(route="/v1/synthesize", status="200").inc()
    m.stream_capacity.labels(core="0").set(5)
    m.measured_sample_seconds.labels(core="0").set(5e-6)
    m.real_time_factor.observe(0.2)
    m.queue_wait.observe(0.001)
    m.watch_frontend(lambda: (1, 2))
    families = {f.name: f.type for f in text_string_to_metric_families(m.render().decode())}
    for name, kind in CONTRACT.items():
        assert families.get(name) == kind, name


def test_40us_bucket_edge() -> None:
    assert 40e-6 in SAMPLE_BUCKETS
    assert list(SAMPLE_BUCKETS) == sorted(SAMPLE_BUCKETS)


def test_record_frames() -> None:
    m = Metrics()
    m.record_frames(
        core=1,
        samples_per_frame=300,
        computes=[0.0027, 0.006],
        waits=[0.0, 0.002],
        late=1,
        redrawn=3,
        clipped=1,
    )
    text = m.render().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("sparrow_samples_generated_total", (("core", "1"),))] == 600
    assert samples[("sparrow_late_frames_total", (("core", "1"),))] == 1
    assert samples[("sparrow_frames_redrawn_total", (("core", "1"),))] == 3
    assert samples[("sparrow_clipped_frames_total", (("core", "1"),))] == 1
    assert abs(samples[("sparrow_worker_busy_seconds_total", (("core", "1"),))] - 0.0087) < 1e-12
    # 0.0027 s / 300 = 9 us lands in the 10 us bucket, 20 us in the 20 us one
    assert (
        samples[("sparrow_sample_duration_seconds_bucket", (("core", "1"), ("le", "1e-05")))] == 1
    )
    assert (
        samples[("sparrow_sample_duration_seconds_bucket", (("core", "1"), ("le", "2e-05")))] == 2
    )
    assert samples[("sparrow_sample_duration_seconds_count", (("core", "1"),))] == 2
    assert samples[("sparrow_queue_wait_seconds_count", ())] == 2
