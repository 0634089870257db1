"""The README's deployment: a Redis reached over TLS with a password, as other Macs would reach it."""

import subprocess
import sys

import anthropic
import httpx
import pytest
from redis import Redis

from tests.integration.conftest import REPO, free_port, stop_process, wait_until

pytestmark = pytest.mark.integration

SECRET = "correct horse battery staple"


@pytest.fixture
def tls_redis(tmp_path):
    """redis-server on a TLS port only, with a password; yields its rediss:// URL (the CA in it)."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", tmp_path / "key.pem", "-out", tmp_path / "cert.pem",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                                "--tls-cert-file", tmp_path / "cert.pem", "--tls-key-file", tmp_path / "key.pem",
                                "--tls-ca-cert-file", tmp_path / "cert.pem", "--tls-auth-clients", "no",
                                "--requirepass", SECRET, "--save", "", "--dir", tmp_path],
                               stdout=subprocess.PIPE, text=True)
    try:
        process.wait(1)
        pytest.fail(f"this redis-server cannot serve TLS (build it with TLS): {process.stdout.read()[-300:]}")
    except subprocess.TimeoutExpired:
        pass  # running
    password = SECRET.replace(" ", "%20")
    url = f"rediss://:{password}@127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={tmp_path / 'cert.pem'}"
    wait_until(lambda: Redis.from_url(url).ping(), 10, "redis-server with TLS")
    yield url
    stop_process(process)


def test_worker_and_api_reach_redis_over_tls_with_a_password(tls_redis, hearth_env, tmp_path):
    with pytest.raises(Exception, match="(?i)auth|password"):
        Redis.from_url(tls_redis.replace(SECRET.replace(" ", "%20"), "wrong")).ping()
    port = free_port()
    env = dict(hearth_env, REDIS_URL=tls_redis, HEARTH_PORT=str(port), HEARTH_HOME=str(tmp_path / "home"),
               HEARTH_WORKER_NAME="over-tls")
    env.pop("HEARTH_FAST_MODEL")
    env.pop("HEARTH_ALIASES")
    processes = [subprocess.Popen([sys.executable, "-m", "hearth.cli", role], env=env, cwd=REPO,
                                  stdout=open(tmp_path / f"{role}.log", "ab"), stderr=subprocess.STDOUT)
                 for role in ("worker", "api")]
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(base_url + "/healthz").status_code == 200, 120, "hearth over TLS")
        client = anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0, timeout=60)
        with client.messages.stream(model="claude-sonnet-4-6", max_tokens=8,
                                    messages=[{"role": "user", "content": "hello"}]) as stream:
            message = stream.get_final_message()
        assert message.usage.output_tokens > 0
        info = subprocess.run([sys.executable, "-m", "rq.cli", "info", "-u", tls_redis],
                              capture_output=True, text=True, timeout=30)
        assert "over-tls" in info.stdout, info.stderr
    finally:
        for process in processes:
            stop_process(process)
