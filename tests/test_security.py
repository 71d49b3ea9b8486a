"""TLS, mTLS and API keys with real certificates made here, from Python (in-process and the
`embedrpc` CLI) and Node clients; certificate and key rotation without a restart; reflection
off by default; metrics only at /metrics; no local paths in answers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import grpc
import pytest
from certificates import CertificateAuthority
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_node_client import run_node_client

from embedrpc.service.bundle.formats import BARS
from embedrpc.v1 import embedding_pb2 as pb
from embedrpc.v1 import embedding_pb2_grpc as pb_grpc

from conftest import cached_checkpoint, exported_bundle
from server_support import LoopbackServer
from test_serve_process import CLI, ServeProcess


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, qwen3_tokenizer_json):
    return exported_bundle(tmp_path_factory, cached_checkpoint("tiny", True))


@pytest.fixture()
def pki(tmp_path):
    ca = CertificateAuthority(tmp_path / "ca")
    return ca, ca.issue("server", "localhost", server=True)


def secure_stub(port, ca_pem, client=None):
    credentials = grpc.ssl_channel_credentials(
        ca_pem.read_bytes(), client.key.read_bytes() if client else None,
        client.cert.read_bytes() if client else None)
    channel = grpc.secure_channel(f"localhost:{port}", credentials)
    return channel, pb_grpc.EmbeddingServiceStub(channel)


def embeds(stub, **call) -> bool:
    try:
        return len(stub.Embed(pb.EmbedRequest(inputs=["hello"]), timeout=10,
                              **call).embeddings) == 1
    except grpc.RpcError as error:
        return error.code()


def test_tls_serves_only_tls_clients_that_trust_its_ca(bundle, pki, tmp_path):
    ca, server_pem = pki
    server = LoopbackServer(bundle, tls_cert=str(server_pem.cert), tls_key=str(server_pem.key))
    try:
        channel, stub = secure_stub(server.port, ca.pem.cert)
        assert embeds(stub) is True
        channel.close()
        assert embeds(server.stub) == grpc.StatusCode.UNAVAILABLE  # plaintext to a TLS port
        stranger = CertificateAuthority(tmp_path / "other")
        channel, stub = secure_stub(server.port, stranger.pem.cert)
        assert embeds(stub) == grpc.StatusCode.UNAVAILABLE  # the server is not trusted
        channel.close()
    finally:
        server.stop()


def test_mtls_requires_a_client_certificate_from_its_ca(bundle, pki, tmp_path):
    ca, server_pem = pki
    server = LoopbackServer(bundle, tls_cert=str(server_pem.cert), tls_key=str(server_pem.key),
                            tls_client_ca=str(ca.pem.cert))
    try:
        client = ca.issue("client", "search-service", server=False)
        channel, stub = secure_stub(server.port, ca.pem.cert, client)
        assert embeds(stub) is True
        channel.close()
        channel, stub = secure_stub(server.port, ca.pem.cert)
        assert embeds(stub) == grpc.StatusCode.UNAVAILABLE  # no client certificate
        channel.close()
        outsider = CertificateAuthority(tmp_path / "other").issue("x", "intruder", server=False)
        channel, stub = secure_stub(server.port, ca.pem.cert, outsider)
        assert embeds(stub) == grpc.StatusCode.UNAVAILABLE  # signed by another CA
        channel.close()
    finally:
        server.stop()


def test_certificates_rotate_without_a_restart(bundle, pki, tmp_path):
    ca, issued = pki
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "tls.crt", live / "tls.key"
    shutil.copy(issued.cert, cert)
    shutil.copy(issued.key, key)
    server = LoopbackServer(bundle, tls_cert=str(cert), tls_key=str(key))
    try:
        channel, stub = secure_stub(server.port, ca.pem.cert)
        assert embeds(stub) is True
        channel.close()
        renewed_ca = CertificateAuthority(tmp_path / "renewed")
        renewed = renewed_ca.issue("server", "localhost", server=True)
        for source, target in ((renewed.key, key), (renewed.cert, cert)):  # as cert-manager does
            staged = target.with_suffix(".new")
            shutil.copy(source, staged)
            os.replace(staged, target)
        channel, stub = secure_stub(server.port, renewed_ca.pem.cert)
        assert embeds(stub) is True  # the new certificate serves new connections
        channel.close()
        channel, stub = secure_stub(server.port, ca.pem.cert)
        assert embeds(stub) == grpc.StatusCode.UNAVAILABLE  # the old one no longer does
        channel.close()
    finally:
        server.stop()


def test_api_keys_are_required_except_for_health(bundle, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# one key per line\nfirst-key-0123456789\n\nsecond-key-9876543210\n")
    server = LoopbackServer(bundle, api_key_file=str(keys))
    try:
        missing = embeds(server.stub)
        assert missing == grpc.StatusCode.UNAUTHENTICATED
        assert embeds(server.stub, metadata=[("authorization", "Bearer wrong")]) == \
            grpc.StatusCode.UNAUTHENTICATED
        assert embeds(server.stub, metadata=[("authorization", "first-key-0123456789")]) == \
            grpc.StatusCode.UNAUTHENTICATED  # the scheme is part of it
        for key in ("first-key-0123456789", "second-key-9876543210"):
            assert embeds(server.stub, metadata=[("authorization", f"Bearer {key}")]) is True
        stream = server.stub.EmbedStream(iter([pb.EmbedRequest(inputs=["x"])]), timeout=10)
        with pytest.raises(grpc.RpcError) as error:
            list(stream)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(server.channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING  # probes need no key
        keys.write_text("rotated-key-5555555555\n")
        time.sleep(1.2)  # the file is looked at no more than once a second
        assert embeds(server.stub, metadata=[("authorization", "Bearer rotated-key-5555555555")]) \
            is True
        assert embeds(server.stub, metadata=[("authorization", "Bearer first-key-0123456789")]) \
            == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.stop()


def test_cli_clients_tls_mtls_and_key_and_sighup_reload(bundle, pki, tmp_path):
    ca, server_pem = pki
    client = ca.issue("client", "cli", server=False)
    keys = tmp_path / "keys"
    keys.write_text("cli-key-1\n")
    server = ServeProcess(bundle, "--host", "127.0.0.1", "--port", 0, "--metrics-port", 0,
                          "--tls-cert", server_pem.cert, "--tls-key", server_pem.key,
                          "--tls-client-ca", ca.pem.cert, "--api-key-file", keys)
    tls = ["--target", f"localhost:{server.port}", "--tls-ca", str(ca.pem.cert),
           "--tls-cert", str(client.cert), "--tls-key", str(client.key)]
    try:
        health = subprocess.run([*CLI, "health", *tls], capture_output=True, text=True,
                                timeout=60)
        assert (health.returncode, health.stdout.strip()) == (0, "SERVING"), health.stderr
        key_file = tmp_path / "client-key"
        key_file.write_text("cli-key-2\n")
        embed = [*CLI, "embed", *tls, "--api-key-file", str(key_file), "hello"]
        refused = subprocess.run(embed, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
        keys.write_bytes(b"cli-key-2\n")
        os.utime(keys, (1, 1))  # a change the one-second look would miss: SIGHUP reloads
        server.process.send_signal(signal.SIGHUP)
        server.wait_for("API keys: 1 accepted", 10)
        done = subprocess.run(embed, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        env_key = subprocess.run([*CLI, "embed", *tls, "hello"], capture_output=True, text=True,
                                 timeout=60, env={**os.environ, "EMBEDRPC_API_KEY": "cli-key-2"})
        assert env_key.returncode == 0, env_key.stderr
    finally:
        server.stop()


def test_node_client_over_mtls_with_an_api_key(bundle, pki, tmp_path):
    ca, server_pem = pki
    client = ca.issue("node", "node-client", server=False)
    server = LoopbackServer(bundle, runtime="onnx-cpu", artifact="onnx-fp32",
                            tls_cert=str(server_pem.cert), tls_key=str(server_pem.key),
                            tls_client_ca=str(ca.pem.cert))
    os.environ["EMBEDRPC_API_KEY"] = "node-key-42"
    try:
        keyed = LoopbackServer(bundle, runtime="onnx-cpu", artifact="onnx-fp32",
                               tls_cert=str(server_pem.cert), tls_key=str(server_pem.key),
                               tls_client_ca=str(ca.pem.cert))
    finally:
        del os.environ["EMBEDRPC_API_KEY"]
    try:
        env = {"EMBEDRPC_TLS_CA": str(ca.pem.cert), "EMBEDRPC_TLS_CERT": str(client.cert),
               "EMBEDRPC_TLS_KEY": str(client.key)}
        run_node_client(f"localhost:{server.port}", tmp_path, BARS["onnx-fp32"], env)
        run_node_client(f"localhost:{keyed.port}", tmp_path, BARS["onnx-fp32"],
                        {**env, "EMBEDRPC_API_KEY": "node-key-42"})
        with pytest.raises(AssertionError, match="UNAUTHENTICATED"):
            run_node_client(f"localhost:{keyed.port}", tmp_path, BARS["onnx-fp32"], env)
    finally:
        server.stop()
        keyed.stop()


def test_bad_security_settings_are_one_line(bundle, tmp_path):
    for flags, message in ((["--tls-cert", "x.crt"], "TLS needs both --tls-cert and --tls-key"),
                           (["--tls-client-ca", "ca.crt"], "--tls-client-ca (mTLS) needs"),
                           (["--tls-cert", "no.crt", "--tls-key", "no.key"],
                            "cannot read the TLS key no.key"),
                           (["--api-key-file", str(tmp_path / "none")],
                            "cannot read the API key file")):
        done = subprocess.run([*CLI, "serve", str(bundle), "--port", "0", "--metrics-port", "0",
                               *flags], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and message in done.stderr, done.stderr


def test_reflection_is_off_unless_asked(bundle):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    for enabled in (False, True):
        server = LoopbackServer(bundle, reflection=enabled)
        try:
            database = ProtoReflectionDescriptorDatabase(server.channel)
            if enabled:
                assert "embedrpc.v1.EmbeddingService" in set(database.get_services())
            else:
                with pytest.raises(grpc.RpcError) as error:
                    database.get_services()
                assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
        finally:
            server.stop()


def test_metrics_only_at_metrics_on_their_own_host(bundle):
    server = ServeProcess(bundle, "--host", "127.0.0.1", "--port", 0, "--metrics-port", "any",
                          "--metrics-host", "127.0.0.1")
    port = server.metrics_port
    try:
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        assert "embedrpc_queue_depth" in page
        for path in ("/", "/metrics/../secret", "/anything"):
            with pytest.raises(urllib.error.HTTPError) as error:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}")
            assert error.value.code == 404
    finally:
        server.stop()


def test_answers_never_show_a_local_path(bundle):
    server = LoopbackServer(bundle)
    try:
        info = server.stub.GetInfo(pb.GetInfoRequest(), timeout=10)
        response = server.stub.Embed(pb.EmbedRequest(inputs=["x"]), timeout=10)
    finally:
        server.stop()
    for name in (info.model, response.model):
        assert "/" not in name and name.endswith(")") and "(local, sha256:" in name
    assert sys.prefix not in info.runtime_reason
