"""API keys: required everywhere but /healthz; a job is visible only to the key that submitted it."""

import fakeredis
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from hearth.settings import Settings

ALICE, BOB = {"x-api-key": "alice-key"}, {"authorization": "Bearer bob-key"}
REQUEST = {"model": "claude-opus-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def keyed(fake_server):
    settings = Settings(redis_url="redis://fake", model="test-model", api_keys=("alice-key", "bob-key"))
    app = create_app(settings, clients=lambda s: (fakeredis.FakeRedis(server=fake_server),
                                                  fakeredis.FakeAsyncRedis(server=fake_server)))
    with TestClient(app, follow_redirects=False) as client:
        yield client


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"},
                                     {"authorization": "Basic alice-key"}, {"x-api-key": ""}])
@pytest.mark.parametrize("method, path", [("POST", "/v1/messages"), ("GET", "/v1/models"), ("GET", "/v1/jobs"),
                                          ("POST", "/v1/chat/completions"), ("GET", "/v1/messages/batches"),
                                          ("GET", "/v1/cache")])
def test_a_missing_or_wrong_key_is_401_in_anthropics_shape(keyed, headers, method, path):
    response = keyed.request(method, path, headers=headers, json=REQUEST)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error" and response.json()["type"] == "error"


def test_healthz_needs_no_key(keyed):
    assert keyed.get("/healthz").status_code in (200, 503)


def test_both_header_styles_work(keyed):
    assert keyed.get("/v1/models", headers=ALICE).status_code == 200
    assert keyed.get("/v1/models", headers=BOB).status_code == 200


def test_a_job_is_visible_only_to_its_submitter(keyed):
    job_id = keyed.post("/v1/jobs", json={"request": REQUEST}, headers=ALICE).json()["id"]
    assert keyed.get(f"/v1/jobs/{job_id}", headers=ALICE).status_code == 200
    assert keyed.get(f"/v1/jobs/{job_id}", headers=BOB).status_code == 404
    assert keyed.get(f"/v1/jobs/{job_id}/events", headers=BOB).status_code == 404
    assert keyed.delete(f"/v1/jobs/{job_id}", headers=BOB).status_code == 404
    assert [j["id"] for j in keyed.get("/v1/jobs", headers=ALICE).json()["data"]] == [job_id]
    assert keyed.get("/v1/jobs", headers=BOB).json()["data"] == []


def test_a_batch_is_visible_only_to_its_submitter(keyed):
    batch = keyed.post("/v1/messages/batches", headers=ALICE,
                       json={"requests": [{"custom_id": "a", "params": REQUEST}]}).json()
    assert keyed.get(f"/v1/messages/batches/{batch['id']}", headers=ALICE).status_code == 200
    assert keyed.get(f"/v1/messages/batches/{batch['id']}", headers=BOB).status_code == 404
    assert keyed.get("/v1/messages/batches", headers=BOB).json()["data"] == []


def test_keys_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("HEARTH_API_KEY", "one")
    monkeypatch.setenv("HEARTH_API_KEYS", "two, three")
    assert Settings.from_env().api_keys == ("one", "two", "three")
