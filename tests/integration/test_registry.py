#!/usr/bin/env python3
"""End-to-end tests of pulling and pushing: a real kbuildd on a private socket, store,
daemon.json and certs dir, against Debian's docker-registry (distribution 2.8) on 127.0.0.1 —
plain HTTP, htpasswd basic auth, TLS with a CA the test makes — and against a small registry in
Python that serves what a real one would not: blobs that do not match their digest or end
early, oversized manifests, unknown layer types, layers that try to write outside their
snapshot, Bearer tokens, redirects to a blob store, and silence. What a registry holds is
checked with skopeo. Nothing listens beyond loopback, every process started is stopped, and
everything lives in one temp dir, removed at the end. Run as root:

    python3 tests/integration/test_registry.py [--build-dir build] [-k PATTERN]

The last line is `registry: N passed, M failed, K skipped` (scripts/test.sh sums it).

Two registries that stop answering are asked in the background while the other tests run: the
daemon gives up on one that answers its /v2/ ping and then stays silent after its 60 s
low-speed limit, so the suite takes a little over a minute.
"""
import argparse
import base64
import gzip
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import unittest
import urllib.parse
import uuid

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import base_image  # noqa: E402
from daemon_process import terminate, wait_listening  # noqa: E402
from mounts import unmount_all_under  # noqa: E402

BUILD_DIR = "build"
BASE = base_image.DEFAULT_TAG
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_GZIP_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
TAR_LAYER_TYPES = {"application/vnd.oci.image.layer.v1.tar", GZIP_LAYER,
                   "application/vnd.docker.image.rootfs.diff.tar",
                   "application/vnd.docker.image.rootfs.diff.tar.gzip"}
MANIFEST_LIMIT = 4 << 20
LAYER_PASSWD = "root:x:0:0:a layer's own:/root:/bin/sh\n"
# The daemon's transport gives up on a registry that sends less than 1 byte/s for this long,
# and on a connection (the TLS handshake included) not made after CONNECT_SECONDS.
LOW_SPEED_SECONDS = 60
CONNECT_SECONDS = 30
# A line of docker-registry's access log: "HEAD /v2/t/app/blobs/sha256:... HTTP/1.1" 200
ACCESS_LINE = re.compile(r'"(GET|HEAD|PUT|POST|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d{3})')
# Extra time for slow machines on the waits for a timeout.
SLACK = 15


def run(cmd, check=True, timeout=180, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} exited {result.returncode}\nstdout:\n{result.stdout[-4000:]}\n"
                             f"stderr:\n{result.stderr[-6000:]}")
    return result


def write(path, content, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)
    os.chmod(path, mode)


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def docker_config(directory, auths=None, **extra):
    """A DOCKER_CONFIG directory whose config.json has `auths` {host: (user, password)}."""
    config = dict(extra)
    if auths is not None:
        config["auths"] = {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
                           for host, (user, password) in auths.items()}
    write(os.path.join(directory, "config.json"), json.dumps(config))
    return directory


# -- kbuildd ----------------------------------------------------------------------------------

class Daemon:
    """kbuildd on a socket, store, daemon.json and certs dir of its own, stopped with SIGTERM.
    Its clients read credentials from `no_credentials` (an empty docker config) unless a call
    names another, so the host's ~/.docker never counts."""

    def __init__(self, workdir, config=None):
        os.makedirs(workdir)
        self.workdir = workdir
        self.socket = os.path.join(workdir, "kbuild.sock")
        self.root = os.path.join(workdir, "root")
        self.certs_dir = os.path.join(workdir, "certs.d")
        os.makedirs(self.certs_dir)
        self.no_credentials = docker_config(os.path.join(workdir, "no-credentials"))
        config_path = os.path.join(workdir, "daemon.json")
        write(config_path, json.dumps(config or {}))
        self.log_path = os.path.join(workdir, "kbuildd.log")
        argv = [os.path.join(BUILD_DIR, "service/kbuildd"), "--listen", self.socket, "--root", self.root,
                "--config", config_path, "--certs-dir", self.certs_dir,
                "--exec-helper", os.path.join(BUILD_DIR, "engine/kbuild-exec")]
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_listening(self.process, self.socket, 10):
            terminate(self.process, 5)
            raise AssertionError(f"kbuildd did not listen on {self.socket}:\n{self.log()[-3000:]}")

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def argv(self, *args):
        return [os.path.join(BUILD_DIR, "cli/kbuildctl"), "--host", "unix://" + self.socket] + list(args)

    def env(self, credentials=None, path=None):
        env = dict(os.environ, DOCKER_CONFIG=credentials or self.no_credentials)
        if path:
            env["PATH"] = path + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        return env

    def client(self, *args, check=True, credentials=None, path=None, **kwargs):
        return run(self.argv(*args), check=check, env=self.env(credentials, path), **kwargs)

    def names(self):
        """"repository:tag" of every image `kbuildctl images` lists."""
        lines = self.client("images").stdout.splitlines()[1:]
        return {f"{fields[0]}:{fields[1]}" for fields in (line.split() for line in lines) if len(fields) >= 2}

    def image_id(self, name):
        """The image's config digest, from what `kbuildctl save` writes."""
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            archive = os.path.join(tmp, "image.tar")
            self.client("save", name, "-o", archive)
            with tarfile.open(archive) as tar:
                config = json.load(tar.extractfile("manifest.json"))[0]["Config"]
        return "sha256:" + os.path.basename(config).removesuffix(".json")

    def blob_temp_files(self):
        tmp = os.path.join(self.root, "blobs", "tmp")
        return sorted(os.listdir(tmp)) if os.path.isdir(tmp) else []

    def stop(self):
        terminate(self.process)


# -- Debian's docker-registry ----------------------------------------------------------------

class DistributionRegistry:
    """`docker-registry serve` on 127.0.0.1, a free port and a storage dir of its own, with
    htpasswd auth or TLS when asked; what clients asked it, read back from its access log."""

    def __init__(self, workdir, name, htpasswd=None, tls=None):
        self.dir = os.path.join(workdir, "registries", name)
        os.makedirs(os.path.join(self.dir, "storage"))
        self.log_path = os.path.join(self.dir, "registry.log")
        self.process = None
        # Another program may take the free port before the registry binds it: try again.
        for _ in range(5):
            self.port = free_port()
            config = {"version": 0.1, "log": {"level": "info"},
                      "storage": {"filesystem": {"rootdirectory": os.path.join(self.dir, "storage")},
                                  "delete": {"enabled": True}},
                      "http": {"addr": f"127.0.0.1:{self.port}", "secret": uuid.uuid4().hex}}
            if htpasswd:
                config["auth"] = {"htpasswd": {"realm": "kbuild-test", "path": htpasswd}}
            if tls:
                config["http"]["tls"] = tls
            config_path = os.path.join(self.dir, "config.yml")
            write(config_path, json.dumps(config))  # JSON is YAML
            env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
            with open(self.log_path, "w") as log:
                self.process = subprocess.Popen(["docker-registry", "serve", config_path], stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
            listening = f"listening on 127.0.0.1:{self.port}"
            if wait_until(lambda: listening in self.log() or self.process.poll() is not None, 15) \
                    and self.process.poll() is None:
                return
            terminate(self.process, 5)
            if "address already in use" not in self.log():
                raise AssertionError(f"docker-registry did not start:\n{self.log()[-3000:]}")
        raise AssertionError("docker-registry found no free port")

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def mark(self):
        """Where the log is now: requests(since=mark) are those made after it."""
        return len(self.log())

    def requests(self, since=0, until=None):
        """(method, path, status) of each request answered after `since`. The registry logs a
        request just after answering it: with `until`, waits (a few seconds at most) for the
        list to satisfy it."""
        found = lambda: [(m.group(1), m.group(2), int(m.group(3)))  # noqa: E731
                         for m in ACCESS_LINE.finditer(self.log()[since:])]
        if until is not None:
            wait_until(lambda: until(found()), 5)
        return found()

    def stop(self):
        if self.process is not None:
            terminate(self.process, 10)


# -- a registry in Python ---------------------------------------------------------------------

def tar_entry(name, kind=tarfile.REGTYPE, data=b"", target="", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, base_image.MTIME, target
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def layer_tar(entries):
    """An uncompressed layer with exactly these entries, names as given (tarfile's addfile keeps a
    leading "/" or a ".." that its add() would strip)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return out.getvalue()


def zstd_compress(data):
    """`data` as one zstd frame, made by the zstd command (python has no zstd module)."""
    return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, capture_output=True, check=True).stdout


GNU_MAGIC = b"ustar  \x00"


def ustar_header(name, typeflag, size, magic=b"ustar\x0000", fields=()):
    """One tar header block as written, whatever it claims: `size` up to 8 GiB - 1 in octal,
    `fields` (offset, bytes) put in before the checksum."""
    block = bytearray(512)
    block[0:len(name)] = name.encode()[:100]
    for offset, width, value in ((100, 8, 0o644), (108, 8, 0), (116, 8, 0), (124, 12, size),
                                 (136, 12, base_image.MTIME)):
        block[offset:offset + width] = b"%0*o\0" % (width - 1, value)
    block[156:157] = typeflag
    block[257:265] = magic
    for offset, value in fields:
        block[offset:offset + len(value)] = value
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def zeros_layer(name, size):
    """An uncompressed layer holding one file of `size` zero bytes, as chunks: never in memory
    at once."""
    info, _ = tar_entry(name)
    info.size = size
    yield info.tobuf(tarfile.PAX_FORMAT)
    chunk = bytes(16 << 20)
    for _ in range(size // len(chunk)):
        yield chunk
    yield bytes(size % len(chunk) + (-size) % 512)
    yield bytes(1024)


def compressed_layer(chunks, media_type):
    """(blob, diff_id) of the layer made of `chunks`, compressed as `media_type` says while the
    tar is hashed, so a layer of GiBs takes seconds and no memory. gzip: one member per chunk
    (RFC 1952 allows any number; gzip -d, Go and libarchive read them all), a chunk that repeats
    compressed once."""
    tar_hash = hashlib.sha256()
    if media_type == ZSTD_LAYER:
        zstd = subprocess.Popen(["zstd", "-q", "-c", "-1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        out = []
        reader = threading.Thread(target=lambda: out.append(zstd.stdout.read()))
        reader.start()
        for chunk in chunks:
            tar_hash.update(chunk)
            zstd.stdin.write(chunk)
        zstd.stdin.close()
        reader.join()
        assert zstd.wait() == 0
        blob = out[0]
    else:
        members, parts = {}, []
        for chunk in chunks:
            tar_hash.update(chunk)
            if chunk not in members:
                members[chunk] = gzip.compress(chunk, mtime=0)
            parts.append(members[chunk])
        blob = b"".join(parts)
    return blob, "sha256:" + tar_hash.hexdigest()


class FakeImage:
    """An image as a registry holds it: its layers gzip'd (or as `layer_media_type` says), a config
    whose diff_ids are the uncompressed layers' digests, the manifest; `blobs` by digest. A layer
    given as (blob, diff_id) is taken as it is."""

    def __init__(self, layers, architecture="amd64", layer_media_type=GZIP_LAYER, annotations=None):
        self.blobs, descriptors, diff_ids = {}, [], []
        for tar in layers:
            if isinstance(tar, tuple):
                blob, diff_id = tar
            else:
                blob = gzip.compress(tar, mtime=0) if "gzip" in layer_media_type else tar
                if layer_media_type == ZSTD_LAYER:
                    blob = zstd_compress(tar)
                diff_id = digest_of(tar)
            self.blobs[digest_of(blob)] = blob
            descriptors.append({"mediaType": layer_media_type, "digest": digest_of(blob), "size": len(blob)})
            diff_ids.append(diff_id)
        config = {"architecture": architecture, "os": "linux", "created": base_image.CREATED,
                  "config": {"Env": ["PATH=" + base_image.PATH], "Cmd": ["sh"]},
                  "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        self.config = json.dumps(config, sort_keys=True).encode()
        self.config_digest = digest_of(self.config)
        self.blobs[self.config_digest] = self.config
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": self.config_digest, "size": len(self.config)},
                    "layers": descriptors}
        if annotations:
            manifest["annotations"] = annotations
        self.manifest = json.dumps(manifest).encode()
        self.digest = digest_of(self.manifest)
        self.layer_digests = [d["digest"] for d in descriptors]
        self.platform = {"os": "linux", "architecture": architecture}


def padded_image(layers, manifest_size):
    """A FakeImage whose manifest is exactly `manifest_size` bytes (an annotation pads it)."""
    image = FakeImage(layers, annotations={"pad": ""})
    pad = manifest_size - len(image.manifest)
    return FakeImage(layers, annotations={"pad": "x" * pad})


def error_body(code, message):
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def finish_request(self, request, client_address):
        # On loopback the daemon tries https:// first. A plain-HTTP registry refuses a TLS
        # ClientHello at once; http.server would wait for the end of a request line that never
        # comes, and the daemon would wait out its connect timeout.
        try:
            request.settimeout(10)
            if request.recv(1, socket.MSG_PEEK) == b"\x16":
                return
        except OSError:
            return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        pass  # a client that went away mid-answer, as the fault tests make it


class FakeRegistry:
    """The read side of the distribution API on 127.0.0.1 and a free port, serving what a test
    put in it (`add`, `add_index`), with the faults it asks for:

      faults[digest] = "corrupt"  the blob with one byte changed, under its digest
                       "short"    Content-Length says all of it; half is sent, then the connection closes
                       "unsized"  half of it without a Content-Length: the connection's end ends it
                       "long"     the blob and more bytes, the Content-Length saying so
      bearer = (user, password)   /v2/... wants `Authorization: Bearer <token>`, the token from
                                  /token, which wants Basic user:password (`token_field` names its JSON key)
      realm = URL                 the token server its challenges name instead of its own /token
      blob_store = FakeRegistry   blob GETs are answered 307 to that server, as registries send
                                  them to object storage

    `requests` records (method, path, Authorization header) of every request; `token_requests`
    (query, Authorization header) of those of /token."""

    def __init__(self):
        self.manifests, self.blobs, self.faults = {}, {}, {}
        self.bearer, self.token_field, self.blob_store, self.realm = None, "token", None, None
        self.token = "tok-" + uuid.uuid4().hex
        self.requests, self.token_requests = [], []
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                registry.answer(self, body=True)

            def do_HEAD(self):
                registry.answer(self, body=False)

        self.server = _HttpServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    def add(self, repository, tag, image):
        self.blobs.update(image.blobs)
        for reference in (tag, image.digest):
            self.manifests[f"{repository}/manifests/{reference}"] = (OCI_MANIFEST, image.manifest)

    def add_index(self, repository, tag, images):
        for image in images:
            self.add(repository, image.digest, image)
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": i.digest, "size": len(i.manifest), "platform": i.platform}
            for i in images]}).encode()
        self.manifests[f"{repository}/manifests/{tag}"] = (OCI_INDEX, index)

    def blob_requests(self):
        return [path.rsplit("/", 1)[1] for method, path, _ in self.requests if "/blobs/" in path and method == "GET"]

    def answer(self, handler, body):
        authorization = handler.headers.get("Authorization", "")
        self.requests.append((handler.command, handler.path, authorization))
        url = urllib.parse.urlsplit(handler.path)
        if url.path == "/token":
            return self.answer_token(handler, url.query, authorization)
        if not url.path.startswith("/v2/"):
            return self.send(handler, 404, b"not found\n", "text/plain", body=body)
        if self.bearer and authorization != "Bearer " + self.token:
            challenge = (f'Bearer realm="{self.realm or f"http://{self.host}/token"}",service="fake",'
                         f'scope="repository:t/app:pull"')
            return self.send(handler, 401, error_body("UNAUTHORIZED", "authentication required"),
                             headers={"WWW-Authenticate": challenge}, body=body)
        path = url.path[len("/v2/"):]
        if path == "":
            return self.send(handler, 200, b"{}", body=body)
        if "/manifests/" in path:
            if path not in self.manifests:
                return self.send(handler, 404, error_body("MANIFEST_UNKNOWN", "manifest unknown"), body=body)
            media_type, data = self.manifests[path]
            return self.send(handler, 200, data, media_type, {"Docker-Content-Digest": digest_of(data)}, body=body)
        if "/blobs/" in path:
            digest = path.rsplit("/", 1)[1]
            if self.blob_store is not None:
                return self.send(handler, 307, b"", headers={"Location": f"http://{self.blob_store.host}/v2/{path}"},
                                 body=body)
            if digest not in self.blobs:
                return self.send(handler, 404, error_body("BLOB_UNKNOWN", "blob unknown to registry"), body=body)
            return self.send_blob(handler, self.blobs[digest], self.faults.get(digest), body)
        return self.send(handler, 404, error_body("NAME_UNKNOWN", "repository name not known to registry"), body=body)

    def answer_token(self, handler, query, authorization):
        self.token_requests.append((urllib.parse.parse_qs(query), authorization))
        user, password = self.bearer
        if authorization != "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode():
            return self.send(handler, 401, json.dumps({"details": "incorrect username or password"}).encode())
        return self.send(handler, 200, json.dumps({self.token_field: self.token, "expires_in": 300}).encode())

    def send(self, handler, status, data, content_type="application/json", headers=None, body=True):
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    def send_blob(self, handler, data, fault, body):
        if not body or fault is None:
            return self.send(handler, 200, data, "application/octet-stream", body=body)
        if fault == "corrupt":
            return self.send(handler, 200, data[:-1] + bytes([data[-1] ^ 0xFF]), "application/octet-stream")
        if fault == "long":
            return self.send(handler, 200, data + b"\0" * 4096, "application/octet-stream")
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        if fault == "short":
            handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data[:len(data) // 2])
        handler.wfile.flush()
        handler.close_connection = True

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class SilentRegistry:
    """Takes connections and never answers them, but for `GET /v2/` when `answer_ping` (then
    a TLS ClientHello is closed at once too, as a plain-HTTP registry's port does, and only what
    comes after the ping meets silence). `events` records (seconds, connection, what): "open",
    the request line or "tls", and "closed" when the client closed its end."""

    def __init__(self, answer_ping):
        self.answer_ping = answer_ping
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.started = time.monotonic()
        self.events, self.connections = [], []
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    def event(self, number, what):
        with self.lock:
            self.events.append((time.monotonic() - self.started, number, what))

    def find(self, what):
        """(seconds, connection) of the first event starting with `what`, or None."""
        with self.lock:
            return next(((t, n) for t, n, w in self.events if w.startswith(what)), None)

    def closed(self, number):
        with self.lock:
            return next((t for t, n, w in self.events if n == number and w == "closed"), None)

    def accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections.append(conn)
                number = len(self.connections)
            threading.Thread(target=self.serve, args=(conn, number), daemon=True).start()

    def serve(self, conn, number):
        self.event(number, "open")
        received, told = b"", False
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                received += data
                if not told and (received[:1] == b"\x16" or b"\r\n" in received):
                    told = True
                    self.event(number, "tls" if received[:1] == b"\x16" else received.split(b"\r\n")[0].decode())
                if self.answer_ping and received[:1] == b"\x16":
                    break
                if self.answer_ping and received.startswith(b"GET /v2/ ") and b"\r\n\r\n" in received:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                                 b"Docker-Distribution-Api-Version: registry/2.0\r\nConnection: close\r\n\r\n{}")
                    break
        except OSError:
            pass
        self.event(number, "closed")
        try:
            conn.close()
        except OSError:
            pass

    def close(self):
        self.listener.close()
        with self.lock:
            connections = list(self.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class BackgroundPull:
    """`kbuildctl pull NAME` started now, left running: its start, and its result when done."""

    def __init__(self, daemon, name):
        self.started = time.monotonic()
        self.process = subprocess.Popen(daemon.argv("pull", name), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=daemon.env(), start_new_session=True)

    def wait(self, timeout):
        """(exit status, stderr, seconds it ran); status None if it still runs after `timeout`."""
        try:
            _, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, "", time.monotonic() - self.started
        return self.process.returncode, err, time.monotonic() - self.started

    def kill(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.communicate()


# -- TLS material -----------------------------------------------------------------------------

def make_ca(directory, name):
    """A CA (ca.crt, ca.key) in `directory`."""
    os.makedirs(directory, exist_ok=True)
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", os.path.join(directory, "ca.key"), "-out", os.path.join(directory, "ca.crt"), "-days", "2",
         "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    return os.path.join(directory, "ca.crt")


def issue(ca_dir, out_prefix, common_name, extensions):
    """A key and a certificate signed by the CA in `ca_dir`: out_prefix.key, out_prefix.crt."""
    ext = out_prefix + ".ext"
    write(ext, "\n".join(extensions) + "\n")
    run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", out_prefix + ".key", "-out", out_prefix + ".csr", "-subj", f"/CN={common_name}"])
    run(["openssl", "x509", "-req", "-in", out_prefix + ".csr", "-CA", os.path.join(ca_dir, "ca.crt"),
         "-CAkey", os.path.join(ca_dir, "ca.key"), "-set_serial", str(uuid.uuid4().int >> 64), "-days", "2",
         "-out", out_prefix + ".crt", "-extfile", ext])
    return out_prefix + ".crt", out_prefix + ".key"


# -- the tests --------------------------------------------------------------------------------

class RegistryTest(unittest.TestCase):
    # Set by main(): whether the silent-registry test is among those run (its pulls start in
    # setUpClass, to run beside the other tests).
    run_silent = True

    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="kbuild-registry-")
        os.chmod(cls.workdir, 0o755)
        cls.closers = []
        try:
            cls.base_archive = os.path.join(cls.workdir, "base.tar")
            base_image.write_base_image(cls.base_archive, BASE)
            cls.base_layer = base_image.layer_tar(base_image.ensure_busybox())
            cls.daemon = Daemon(os.path.join(cls.workdir, "daemon"))
            cls.closers.append(cls.daemon.stop)
            cls.daemon.client("load", "-i", cls.base_archive)
            cls.silent = {}
            if cls.run_silent:
                # The one whose client goes away is started by its test: only that test's own
                # timing matters for it, not how long the tests before it took.
                for kind, answer_ping in (("after-ping", True), ("mute", False)):
                    server = SilentRegistry(answer_ping)
                    cls.closers.append(server.close)
                    pull = BackgroundPull(cls.daemon, f"{server.host}/t/app:1")
                    cls.closers.append(pull.kill)
                    cls.silent[kind] = (server, pull)
        except BaseException:
            cls.tearDownClass()  # unittest does not when setUpClass fails
            raise

    @classmethod
    def tearDownClass(cls):
        for close in reversed(getattr(cls, "closers", [])):
            try:
                close()
            except Exception as e:  # noqa: BLE001 -- the rest must still be stopped
                print(f"cleanup: {e}", file=sys.stderr)
        unmount_all_under(cls.workdir)
        shutil.rmtree(cls.workdir, ignore_errors=True)

    # -- helpers --------------------------------------------------------------------------------

    def path(self, *parts):
        return os.path.join(self.workdir, self.id().rsplit(".", 1)[-1], *parts)

    def context(self, dockerfile, files=None, name="ctx"):
        path = self.path(name)
        shutil.rmtree(path, ignore_errors=True)
        write(os.path.join(path, "Dockerfile"), dockerfile)
        for rel, content in (files or {}).items():
            write(os.path.join(path, rel), content)
        return path

    def build(self, ctx, *args, daemon=None, **kwargs):
        return (daemon or self.daemon).client("build", "--progress", "plain", *args, ".", cwd=ctx, **kwargs)

    def app_context(self):
        return self.context(f"FROM {BASE}\nRUN echo hi > /hi\nCOPY f /f\n", {"f": "from the context\n"}, name="app")

    def distribution(self, name, **kwargs):
        registry = DistributionRegistry(self.workdir, f"{self.id().rsplit('.', 1)[-1]}-{name}", **kwargs)
        self.addCleanup(registry.stop)
        return registry

    def fake(self):
        registry = FakeRegistry()
        self.addCleanup(registry.close)
        return registry

    def second_daemon(self, name, config=None):
        daemon = Daemon(self.path(name), config)
        self.addCleanup(daemon.stop)
        return daemon

    def skopeo(self, *args, **kwargs):
        # skopeo's own credentials and proxies must not count either.
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update(DOCKER_CONFIG=self.daemon.no_credentials, REGISTRY_AUTH_FILE=self.path("skopeo-auth.json"))
        write(env["REGISTRY_AUTH_FILE"], "{}")
        return run(["skopeo"] + list(args), env=env, **kwargs)

    def failing(self, result):
        self.assertNotEqual(result.returncode, 0, f"expected a failure\nstdout:\n{result.stdout}\n"
                                                  f"stderr:\n{result.stderr[-3000:]}")
        return result.stderr + result.stdout

    def assert_pull_fails(self, name, *words, daemon=None, **kwargs):
        """A failing pull whose message holds one of `words` and that leaves no name behind."""
        daemon = daemon or self.daemon
        message = self.failing(daemon.client("pull", name, check=False, **kwargs))
        self.assertTrue(any(w.lower() in message.lower() for w in words), f"none of {words} in:\n{message}")
        self.assertNotIn(name, daemon.names())
        self.assertTrue(wait_until(lambda: not daemon.blob_temp_files(), 5),
                        f"the failed pull left temp files: {daemon.blob_temp_files()}")
        return message

    # -- plain HTTP on loopback -----------------------------------------------------------------

    def test_build_push_to_plain_http_loopback_then_inspect_pull_copy_and_push_again(self):
        registry = self.distribution("plain")
        name = f"{registry.host}/t/app:1"
        meta = self.path("metadata.json")
        built = self.build(self.app_context(), "-t", name, "--push", "--metadata-file", meta)
        with open(meta) as f:
            metadata = json.load(f)
        image_id = metadata["containerimage.config.digest"]

        # What the registry holds: skopeo's view, the manifest's own bytes, the config.
        inspect = json.loads(self.skopeo("inspect", "--tls-verify=false", "docker://" + name).stdout)
        raw = self.skopeo("inspect", "--raw", "--tls-verify=false", "docker://" + name).stdout.encode()
        manifest = json.loads(raw)
        pushed = inspect["Digest"]
        self.assertEqual(digest_of(raw), pushed)
        # BuildKit's image exporter's defaults: Docker media types, gzip layers.
        self.assertEqual(manifest["mediaType"], DOCKER_MANIFEST)
        self.assertEqual(manifest["config"]["mediaType"], DOCKER_CONFIG)
        self.assertEqual(manifest["config"]["digest"], image_id)
        self.assertEqual(len(inspect["Layers"]), 3, inspect)  # the base's, RUN's and COPY's
        self.assertEqual(inspect["Layers"], [layer["digest"] for layer in manifest["layers"]])
        for layer in manifest["layers"]:
            self.assertEqual(layer["mediaType"], DOCKER_GZIP_LAYER, manifest)
        # The build's metadata names the manifest pushed, as BuildKit's does.
        self.assertEqual(metadata["containerimage.digest"], pushed, metadata)
        self.assertEqual(metadata["containerimage.descriptor"]["digest"], pushed, metadata)
        self.assertEqual(metadata["containerimage.descriptor"]["size"], len(raw), metadata)
        self.assertIn(f"pushing manifest for {name}", built.stderr)

        # skopeo copies every blob, checking each against its digest, to a directory that keeps
        # the manifest as it is (an OCI layout would take OCI media types only); the config is
        # ours, and the layers hash to its diff_ids.
        layout = self.path("copied")
        self.skopeo("copy", "--src-tls-verify=false", "docker://" + name, f"dir:{layout}")
        with open(os.path.join(layout, "manifest.json"), "rb") as f:
            self.assertEqual(f.read(), raw)

        def blob(digest):
            with open(os.path.join(layout, digest.split(":")[1]), "rb") as f:
                data = f.read()
            self.assertEqual(digest_of(data), digest)
            return data
        copied = manifest
        config = json.loads(blob(image_id))
        diff_ids = [digest_of(gzip.decompress(blob(layer["digest"])) if layer["mediaType"].endswith("gzip")
                              else blob(layer["digest"])) for layer in copied["layers"]]
        self.assertEqual(diff_ids, config["rootfs"]["diff_ids"])

        # Removed, then pulled: the same image.
        self.daemon.client("rmi", name)
        self.assertNotIn(name, self.daemon.names())
        mark = registry.mark()
        pulled = self.daemon.client("pull", name).stdout
        self.assertIn(f"Digest: {pushed}", pulled)
        self.assertIn(name, self.daemon.names())
        self.assertEqual(self.daemon.image_id(name), image_id)
        manifest_get = ("GET", "/v2/t/app/manifests/1", 200)
        self.assertIn(manifest_get, registry.requests(mark, until=lambda r: manifest_get in r))

        # Pushed again: the same digest, and only HEADs for the blobs the registry has.
        mark = registry.mark()
        again = self.daemon.client("push", name).stdout
        self.assertIn(f"1: digest: {pushed} size: {len(raw)}", again)
        manifest_put = ("PUT", "/v2/t/app/manifests/1", 201)
        requests = registry.requests(mark, until=lambda r: manifest_put in r)
        self.assertEqual(sorted(p.rsplit("/", 1)[1] for m, p, s in requests if m == "HEAD" and s == 200),
                         sorted([image_id] + inspect["Layers"]), requests)
        self.assertEqual([r for r in requests if "/blobs/uploads" in r[1]], [], "blobs uploaded again")
        self.assertIn(manifest_put, requests)

    def test_push_writes_the_compression_and_media_types_the_output_asks_for(self):
        registry = self.distribution("formats")
        # A base pulled from the registry keeps its gzip blobs unless force-compression says otherwise.
        base = f"{registry.host}/t/base:1"
        self.daemon.client("tag", BASE, base)
        self.daemon.client("push", base)
        self.daemon.client("rmi", base)
        self.daemon.client("pull", base)
        # Random bytes and text in one layer of several 1 MiB blocks: stored pieces and compressed ones.
        ctx = self.context(f"FROM {base}\nRUN head -c 300000 /dev/urandom > /random && seq 1 300000 > /text\n"
                           "COPY f /f\n", {"f": "formats\n"}, name="formats")
        self.build(ctx, "-t", "formats")

        def push(tag, *attributes):
            name = f"{registry.host}/t/formats:{tag}"
            self.build(ctx, "--output", ",".join(["type=registry", f"name={name}", *attributes]))
            raw = self.skopeo("inspect", "--raw", "--tls-verify=false", "docker://" + name).stdout.encode()
            manifest = json.loads(raw)
            # skopeo checks every blob against its digest as it copies; an OCI layout takes OCI
            # manifests as they are, a directory any manifest.
            oci = manifest["mediaType"] == OCI_MANIFEST
            layout = self.path("layout-" + tag)
            self.skopeo("copy", "--src-tls-verify=false", "docker://" + name,
                        f"oci:{layout}:{tag}" if oci else f"dir:{layout}")
            if oci:
                with open(os.path.join(layout, "index.json")) as f:
                    self.assertEqual(json.load(f)["manifests"][0]["digest"], digest_of(raw))

            def blob(digest):
                path = os.path.join(layout, "blobs", *digest.split(":")) if oci else \
                    os.path.join(layout, digest.split(":")[1])
                with open(path, "rb") as f:
                    data = f.read()
                self.assertEqual(digest_of(data), digest)
                return data
            config = json.loads(blob(manifest["config"]["digest"]))
            tars = []
            for layer in manifest["layers"]:
                data = blob(layer["digest"])
                if layer["mediaType"].endswith("zstd"):
                    data = subprocess.run(["zstd", "-d", "-c"], input=data, capture_output=True, check=True).stdout
                elif layer["mediaType"].endswith("gzip"):
                    data = gzip.decompress(data)  # every member of a multi-member gzip
                tars.append(data)
            # Whatever the format, the layers are the image's: their tars hash to its diff_ids.
            self.assertEqual([digest_of(t) for t in tars], config["rootfs"]["diff_ids"], tag)
            return manifest, layout, tars

        manifest, layout, tars = push("oci", "oci-mediatypes=true")
        self.assertEqual(manifest["mediaType"], OCI_MANIFEST)
        self.assertEqual(manifest["config"]["mediaType"], OCI_CONFIG)
        self.assertEqual([layer["mediaType"] for layer in manifest["layers"]], [GZIP_LAYER] * 3)
        # Go's gzip reader (umoci's) takes the layers as they are, and finds the files.
        rootfs = self.path("unpacked")
        run(["umoci", "unpack", "--rootless", "--image", f"{layout}:oci", rootfs])
        with open(os.path.join(rootfs, "rootfs", "text")) as f:
            self.assertEqual(f.read(), "".join(f"{i}\n" for i in range(1, 300001)))
        self.assertEqual(os.path.getsize(os.path.join(rootfs, "rootfs", "random")), 300000)
        run_layer = tars[1]
        gzip_size = manifest["layers"][1]["size"]
        self.assertLess(gzip_size, len(run_layer) * 0.6, "the text is compressed")
        self.assertGreater(gzip_size, 300000, "the random bytes cannot be")

        # zstd: OCI media types whatever oci-mediatypes says (Docker has no zstd type); the base
        # keeps its gzip blob.
        manifest, _, _ = push("zstd", "compression=zstd", "compression-level=19")
        self.assertEqual(manifest["mediaType"], OCI_MANIFEST)
        self.assertEqual([layer["mediaType"] for layer in manifest["layers"]], [GZIP_LAYER, ZSTD_LAYER, ZSTD_LAYER])
        manifest, _, _ = push("zstd-forced", "compression=zstd", "force-compression=true")
        self.assertEqual([layer["mediaType"] for layer in manifest["layers"]], [ZSTD_LAYER] * 3)

        manifest, _, tars = push("plain", "compression=uncompressed")
        self.assertEqual(manifest["mediaType"], DOCKER_MANIFEST)
        self.assertEqual([layer["mediaType"] for layer in manifest["layers"]],
                         [DOCKER_GZIP_LAYER] + ["application/vnd.docker.image.rootfs.diff.tar"] * 2)
        self.assertEqual(manifest["layers"][1]["size"], len(tars[1]))

        # Values BuildKit refuses fail before anything is sent.
        for attribute, words in [("compression=lz4", "unsupported compression type lz4"),
                                 ("compression=zstd,compression-level=23", "out of range"),
                                 ("compression-level=fast", "non-integer value fast"),
                                 ("force-compression=maybe", "non-bool value maybe"),
                                 ("oci-mediatypes=yes", "non-bool value yes")]:
            mark = registry.mark()
            message = self.failing(self.build(ctx, "--output", f"type=registry,name={registry.host}/t/bad:1,{attribute}",
                                              check=False))
            self.assertIn(words, message)
            self.assertEqual(registry.requests(mark), [], attribute)

    def test_a_push_whose_streamed_upload_breaks_fails_and_the_next_one_completes(self):
        # A layer pushed for the first time is compressed while it is sent: a registry that stops
        # reading part way, or refuses it at the end, fails the push with the reason, and the
        # next push (to a working registry) sends the whole layer.
        seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, status, headers=()):
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                self.answer(200 if self.path == "/v2/" else 404)

            def do_HEAD(self):
                self.answer(404)

            def do_POST(self):
                self.answer(202, [("Location", "/v2/t/broken/blobs/uploads/u1"), ("Docker-Upload-UUID", "u1")])

            def do_PATCH(self):
                seen.append(("PATCH", self.headers.get("Transfer-Encoding")))
                if "stop" in self.server.mode:
                    self.rfile.read(65536)  # a little of the first chunk, then the connection goes
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                while True:  # chunked: read it all, then refuse the digest at PUT
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    self.rfile.read(size + 2)
                    if size == 0:
                        break
                self.answer(202, [("Location", "/v2/t/broken/blobs/uploads/u1")])

            def do_PUT(self):
                seen.append(("PUT", self.path))
                if "stop" in self.server.mode:  # a blob stored before is sent with PUT: dropped too
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.answer(400)

        # A dropped connection is a transport error naming the host; a refusal names the blob.
        for mode, words in (("stop", "/t/broken:1: 127.0.0.1:"), ("refuse", "400 Bad Request")):
            # A layer of its own for each: never pushed, so compressed while it is sent.
            ctx = self.context(f"FROM {BASE}\nRUN echo {mode} > /mode && head -c 3000000 /dev/urandom > /r && "
                               "seq 1 400000 > /t\n", {}, name=f"broken-{mode}")
            self.build(ctx, "-t", "broken-upload")
            before = len(seen)
            server = _HttpServer(("127.0.0.1", 0), Handler)
            server.mode = mode
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.addCleanup(server.server_close)
            self.addCleanup(server.shutdown)
            name = f"127.0.0.1:{server.server_address[1]}/t/broken:1"
            self.daemon.client("tag", "broken-upload", name)
            message = self.failing(self.daemon.client("push", name, check=False))
            self.assertIn(f"pushing {name}", message, mode)
            self.assertIn(words, message, mode)
            self.assertIn(("PATCH", "chunked"), seen[before:], mode)
            if mode == "refuse":  # the whole layer was sent, then its digest given
                self.assertTrue(any(m == "PUT" and "digest=sha256%3A" in p for m, p in seen[before:]), seen)
            self.assertTrue(wait_until(lambda: not self.daemon.blob_temp_files(), 5),
                            f"{mode}: the failed push left temp files: {self.daemon.blob_temp_files()}")

        registry = self.distribution("after-broken")
        name = f"{registry.host}/t/whole:1"
        self.daemon.client("tag", "broken-upload", name)
        self.daemon.client("push", name)
        layout = self.path("whole")
        self.skopeo("copy", "--src-tls-verify=false", "docker://" + name, f"dir:{layout}")
        with open(os.path.join(layout, "manifest.json")) as f:
            manifest = json.load(f)
        with open(os.path.join(layout, manifest["config"]["digest"].split(":")[1])) as f:
            diff_ids = json.load(f)["rootfs"]["diff_ids"]
        for layer, diff_id in zip(manifest["layers"], diff_ids):
            with open(os.path.join(layout, layer["digest"].split(":")[1]), "rb") as f:
                self.assertEqual(digest_of(gzip.decompress(f.read())), diff_id)

    def test_push_to_another_repository_mounts_the_layers_pulled_from_the_first(self):
        registry = self.distribution("mount")
        source = f"{registry.host}/t/source:1"
        self.build(self.app_context(), "-t", source, "--push")
        self.daemon.client("rmi", source)
        self.daemon.client("pull", source)
        raw = self.skopeo("inspect", "--raw", "--tls-verify=false", "docker://" + source).stdout
        layers = [layer["digest"] for layer in json.loads(raw)["layers"]]
        target = f"{registry.host}/t/target:1"
        self.daemon.client("tag", source, target)
        mark = registry.mark()
        self.daemon.client("push", target)
        manifest_put = ("PUT", "/v2/t/target/manifests/1", 201)
        requests = registry.requests(mark, until=lambda r: manifest_put in r)
        mounted = sorted(p.split("mount=")[1].split("&")[0].replace("%3A", ":")
                         for m, p, s in requests if m == "POST" and "mount=" in p and s == 201)
        self.assertEqual(mounted, sorted(layers), requests)
        uploads = [r for r in requests if r[0] in ("PUT", "PATCH") and "/blobs/uploads/" in r[1]]
        self.assertEqual(len(uploads), 1, f"only the config is uploaded: {requests}")
        self.assertEqual(json.loads(self.skopeo("inspect", "--raw", "--tls-verify=false", "docker://" + target).stdout)
                         ["layers"], json.loads(raw)["layers"])

    def test_build_from_a_pushed_image_pulls_it(self):
        registry = self.distribution("plain")
        name = f"{registry.host}/t/app:from"
        self.build(self.app_context(), "-t", name, "--push")
        dockerfile = f"FROM {name}\nRUN cat /hi /f > /both\n"

        # The image removed here: the build pulls the manifest again (the blobs stay in the store).
        self.daemon.client("rmi", name)
        mark = registry.mark()
        out = self.path("rootfs.tar")
        self.build(self.context(dockerfile), "-o", f"type=tar,dest={out}")
        with tarfile.open(out) as tar:
            self.assertEqual(tar.extractfile("both").read(), b"hi\nfrom the context\n")
        manifest_get = ("GET", "/v2/t/app/manifests/from", 200)
        self.assertIn(manifest_get, registry.requests(mark, until=lambda r: manifest_get in r))
        self.assertIn(name, self.daemon.names())

        # A daemon with an empty store (not even the busybox base): every blob comes from the
        # registry, and the step runs on what came.
        fresh = self.second_daemon("fresh")
        mark = registry.mark()
        self.build(self.context(dockerfile, name="ctx-fresh"), "-o", f"type=tar,dest={out}", daemon=fresh)
        with tarfile.open(out) as tar:
            self.assertEqual(tar.extractfile("both").read(), b"hi\nfrom the context\n")
        inspect = json.loads(self.skopeo("inspect", "--tls-verify=false", "docker://" + name).stdout)
        expected = set(inspect["Layers"]) | {fresh.image_id(name)}

        def fetched(requests):
            return {p.rsplit("/", 1)[1] for m, p, s in requests if m == "GET" and "/blobs/" in p and s == 200}
        self.assertEqual(fetched(registry.requests(mark, until=lambda r: fetched(r) >= expected)), expected)

    def test_build_pull_flag_takes_the_registry_tag_over_the_store(self):
        registry = self.distribution("plain")
        name = f"{registry.host}/t/base:1"
        for text in ("one", "two"):
            self.build(self.context(f"FROM {BASE}\nRUN echo {text} > /version\n", name=f"base-{text}"), "-t", name,
                       "--push")
        # The store's name now holds "two"; the registry too. Put "one" back in the store only.
        self.build(self.context(f"FROM {BASE}\nRUN echo one > /version\n", name="base-one"), "-t", name)
        child = self.context(f"FROM {name}\nRUN cp /version /seen\n", name="child")
        out = self.path("seen.tar")

        def seen(*args):
            self.build(child, "--no-cache", "-o", f"type=tar,dest={out}", *args)
            with tarfile.open(out) as tar:
                return tar.extractfile("seen").read().decode().strip()
        self.assertEqual(seen(), "one")
        self.assertEqual(seen("--pull"), "two")

    def assert_output_pushes(self, output):
        registry = self.distribution("plain")
        name = f"{registry.host}/t/out:1"
        meta = self.path("metadata.json")
        result = self.build(self.app_context(), "-t", name, "-o", output, "--metadata-file", meta, check=False)
        self.assertEqual(result.returncode, 0, f"-o {output}:\n{result.stderr[-2000:]}")
        inspect = json.loads(self.skopeo("inspect", "--tls-verify=false", "docker://" + name).stdout)
        with open(meta) as f:
            self.assertEqual(json.load(f)["containerimage.digest"], inspect["Digest"])

    def test_registry_output_pushes_the_tags(self):
        self.assert_output_pushes("type=registry")

    def test_image_output_with_push_true_pushes_the_tags(self):
        self.assert_output_pushes("type=image,push=true")

    def test_pull_of_a_missing_tag_or_repository_fails_and_names_nothing(self):
        registry = self.distribution("plain")
        name = f"{registry.host}/t/app:1"
        self.build(self.app_context(), "-t", name, "--push")
        for missing in (f"{registry.host}/t/app:missing", f"{registry.host}/t/nothing:1"):
            message = self.assert_pull_fails(missing, "not found", "manifest unknown")
            self.assertIn(missing.rsplit(":", 1)[0], message)
            ctx = self.context(f"FROM {missing}\nRUN true\n")
            message = self.failing(self.build(ctx, check=False))
            self.assertTrue("not found" in message.lower() or "manifest unknown" in message, message)
            self.assertNotIn(missing, self.daemon.names())

    def test_push_of_an_image_loaded_from_a_docker_archive(self):
        # `kbuildctl load` keeps the archive's Docker schema 2 manifest; a push must send a
        # manifest whose body and Content-Type agree.
        registry = self.distribution("plain")
        name = f"{registry.host}/t/loaded:1"
        self.daemon.client("tag", BASE, name)
        pushed = self.daemon.client("push", name, check=False)
        self.assertEqual(pushed.returncode, 0, pushed.stderr)
        inspect = json.loads(self.skopeo("inspect", "--tls-verify=false", "docker://" + name).stdout)
        self.assertEqual(len(inspect["Layers"]), 1)

    # -- htpasswd -------------------------------------------------------------------------------

    def test_login_checks_with_the_registry_then_keeps_the_credentials_and_logout_drops_them(self):
        user, password = "builder", "pw-" + uuid.uuid4().hex
        htpasswd = self.path("htpasswd-login")
        write(htpasswd, run(["htpasswd", "-Bbn", user, password]).stdout)
        registry = self.distribution("login", htpasswd=htpasswd)
        config_dir = os.path.join(self.workdir, "login-config")
        config_file = os.path.join(config_dir, "config.json")
        # A refused password: one clear error, and nothing written.
        refused = self.daemon.client("login", "-u", user, "--password-stdin", registry.host, check=False,
                                     credentials=config_dir, input="not-" + password + "\n")
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("incorrect username or password", refused.stderr)
        self.assertFalse(os.path.exists(config_file))
        # The right one: checked, then kept as docker keeps it (0600, in a 0700 directory).
        ok = self.daemon.client("login", "-u", user, "--password-stdin", registry.host,
                                credentials=config_dir, input=password + "\n")
        self.assertEqual(ok.stdout, "Login Succeeded\n")
        self.assertEqual(os.stat(config_file).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(config_dir).st_mode & 0o777, 0o700)
        with open(config_file) as f:
            saved = json.load(f)
        self.assertEqual(base64.b64decode(saved["auths"][registry.host]["auth"]).decode(), f"{user}:{password}")
        self.assertNotIn(password, self.daemon.log())
        # What login kept is what push uses.
        name = f"{registry.host}/t/login:1"
        self.build(self.app_context(), "-t", name)
        self.daemon.client("push", name, credentials=config_dir)
        out = self.daemon.client("logout", registry.host, credentials=config_dir).stdout
        self.assertEqual(out, f"Removing login credentials for {registry.host}\n")
        with open(config_file) as f:
            self.assertNotIn(registry.host, json.load(f)["auths"])
        self.assertEqual(self.daemon.client("logout", registry.host, credentials=config_dir).stdout,
                         f"Not logged in to {registry.host}\n")
        self.failing(self.daemon.client("push", name, check=False, credentials=config_dir))

    def test_basic_auth_needs_the_right_credentials_and_never_shows_them(self):
        user, password = "builder", "pw-" + uuid.uuid4().hex
        htpasswd = self.path("htpasswd")
        write(htpasswd, run(["htpasswd", "-Bbn", user, password]).stdout)
        registry = self.distribution("auth", htpasswd=htpasswd)
        name = f"{registry.host}/t/private:1"
        ctx = self.app_context()
        self.build(ctx, "-t", name)

        shown = []  # everything the client printed
        message = self.failing(self.daemon.client("push", name, check=False))
        self.assertTrue("unauthorized" in message.lower() or "authentication" in message.lower(), message)
        wrong_password = "not-" + password
        wrong = docker_config(self.path("wrong"), {registry.host: (user, wrong_password)})
        message = self.failing(self.daemon.client("push", name, check=False, credentials=wrong))
        self.assertIn("incorrect username or password", message)
        self.assertIn("unauthorized", message.lower())
        shown.append(message)
        # Credentials for another registry are not these.
        elsewhere = docker_config(self.path("elsewhere"), {"127.0.0.2:5000": (user, password)})
        self.failing(self.daemon.client("push", name, check=False, credentials=elsewhere))

        right = docker_config(self.path("right"), {registry.host: (user, password)})
        pushed = self.daemon.client("push", name, credentials=right)
        inspect = json.loads(self.skopeo("inspect", "--tls-verify=false", "--creds", f"{user}:{password}",
                                         "docker://" + name).stdout)
        self.assertIn(inspect["Digest"], pushed.stdout)
        built = self.build(ctx, "-t", f"{registry.host}/t/private:2", "--push", credentials=right)
        self.daemon.client("rmi", name)
        self.assert_pull_fails(name, "unauthorized", "authentication")
        pulled = self.daemon.client("pull", name, credentials=right)
        self.assertIn(f"Digest: {inspect['Digest']}", pulled.stdout)
        shown += [r.stdout + r.stderr for r in (pushed, built, pulled)]

        secrets = [password, wrong_password] + [base64.b64encode(f"{user}:{p}".encode()).decode()
                                                for p in (password, wrong_password)]
        for secret in secrets:
            self.assertNotIn(secret, self.daemon.log(), "kbuildd's log")
            for text in shown:
                self.assertNotIn(secret, text)
        for top, _, files in os.walk(self.daemon.root):
            for file in files:
                path = os.path.join(top, file)
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as f:
                        data = f.read()
                    for secret in secrets:
                        self.assertNotIn(secret.encode(), data, f"the store's {path}")

    def test_basic_auth_from_a_credential_helper(self):
        user, password = "helped", "pw-" + uuid.uuid4().hex
        htpasswd = self.path("htpasswd")
        write(htpasswd, run(["htpasswd", "-Bbn", user, password]).stdout)
        registry = self.distribution("auth", htpasswd=htpasswd)
        name = f"{registry.host}/t/helped:1"
        self.build(self.app_context(), "-t", name)
        helpers = self.path("bin")
        # docker-credential-<name> get: the server on stdin, {"Username", "Secret"} on stdout.
        write(os.path.join(helpers, "docker-credential-kbuildtest"),
              f"#!/bin/sh\nread server\n[ \"$server\" = \"{registry.host}\" ] || exit 1\n"
              f"printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}' \"$server\"\n",
              mode=0o755)
        config = docker_config(self.path("helper-config"), credHelpers={registry.host: "kbuildtest"})
        self.daemon.client("push", name, credentials=config, path=helpers)
        store = docker_config(self.path("store-config"), credsStore="kbuildtest")
        self.daemon.client("push", name, credentials=store, path=helpers)
        self.assertNotIn(password, self.daemon.log())

    # -- TLS ------------------------------------------------------------------------------------

    def test_tls_registry_is_trusted_through_the_certs_dir(self):
        tls = self.path("tls")
        make_ca(tls, "kbuild test CA")
        cert, key = issue(tls, os.path.join(tls, "server"), "127.0.0.1",
                          ["subjectAltName=IP:127.0.0.1", "basicConstraints=CA:FALSE", "extendedKeyUsage=serverAuth"])
        registry = self.distribution("tls", tls={"certificate": cert, "key": key})
        name = f"{registry.host}/t/app:1"
        self.build(self.app_context(), "-t", name)

        # Untrusted: refused, naming where the CA goes, and never retried over plain HTTP.
        mark = registry.mark()
        message = self.failing(self.daemon.client("push", name, check=False))
        self.assertIn(f"certs.d/{registry.host}/ca.crt", message)
        self.assertIn("not trusted", message)
        self.assertNotIn("client sent an HTTP request to an HTTPS server", registry.log()[mark:])
        self.assertEqual(registry.requests(mark), [])

        # The CA where the daemon's certs dir says: read on the next request, no restart.
        host_dir = os.path.join(self.daemon.certs_dir, registry.host)
        os.makedirs(host_dir)
        shutil.copy(os.path.join(tls, "ca.crt"), os.path.join(host_dir, "ca.crt"))
        pushed = self.daemon.client("push", name).stdout
        inspect = json.loads(self.skopeo("inspect", "--cert-dir", host_dir, "docker://" + name).stdout)
        self.assertIn(inspect["Digest"], pushed)
        self.daemon.client("rmi", name)
        self.daemon.client("pull", name)
        self.assertIn(name, self.daemon.names())

        # insecure-registries: the certificate is not checked.
        insecure = self.second_daemon("insecure", {"insecure-registries": [registry.host]})
        insecure.client("load", "-i", self.base_archive)
        self.build(self.app_context(), "-t", f"{registry.host}/t/insecure:1", "--push", daemon=insecure)

    def test_docker_hub_names_come_from_a_mirror_named_in_daemon_json(self):
        # The mirror holds library/mirrored:1; the daemon finds docker.io/library/mirrored:1
        # there, and never asks Docker Hub (the mirror answers first).
        mirror = self.distribution("mirror")
        self.build(self.app_context(), "-t", f"{mirror.host}/library/mirrored:1", "--push")
        hub = self.second_daemon("hub", {"registry-mirrors": [f"http://{mirror.host}"]})
        pulled = hub.client("pull", "mirrored:1").stdout
        self.assertIn("docker.io/library/mirrored:1", pulled)
        self.assertIn("mirrored:1", hub.names())
        ctx = self.path("from-hub")
        write(os.path.join(ctx, "Dockerfile"), "FROM mirrored:1\nRUN cat /hi\n")
        hub.client("rmi", "mirrored:1")
        built = self.build(ctx, daemon=hub)
        self.assertIn("load metadata for docker.io/library/mirrored:1", built.stderr)

    def test_tls_client_certificate_from_the_certs_dir(self):
        tls = self.path("tls")
        make_ca(tls, "kbuild test CA")
        cert, key = issue(tls, os.path.join(tls, "server"), "127.0.0.1",
                          ["subjectAltName=IP:127.0.0.1", "basicConstraints=CA:FALSE", "extendedKeyUsage=serverAuth"])
        clients = self.path("clients")
        make_ca(clients, "kbuild test client CA")
        client_cert, client_key = issue(clients, os.path.join(clients, "client"), "kbuild",
                                        ["basicConstraints=CA:FALSE", "extendedKeyUsage=clientAuth"])
        registry = self.distribution("mtls", tls={"certificate": cert, "key": key,
                                                  "clientcas": [os.path.join(clients, "ca.crt")]})
        name = f"{registry.host}/t/app:1"
        self.build(self.app_context(), "-t", name)
        host_dir = os.path.join(self.daemon.certs_dir, registry.host)
        os.makedirs(host_dir)
        shutil.copy(os.path.join(tls, "ca.crt"), os.path.join(host_dir, "ca.crt"))
        self.failing(self.daemon.client("push", name, check=False))
        shutil.copy(client_cert, os.path.join(host_dir, "client.cert"))
        shutil.copy(client_key, os.path.join(host_dir, "client.key"))
        self.daemon.client("push", name)

    # -- a registry's faults --------------------------------------------------------------------

    def small_layer(self, text):
        return layer_tar([tar_entry("data", data=text.encode())])

    def test_blob_that_does_not_match_its_digest_is_refused(self):
        registry = self.fake()
        for part in ("layer", "config"):
            image = FakeImage([self.small_layer(f"digest check of the {part} {uuid.uuid4()}\n")])
            bad = image.layer_digests[0] if part == "layer" else image.config_digest
            registry.add(f"t/{part}", "1", image)
            name = f"{registry.host}/t/{part}:1"
            for fault in ("corrupt", "long"):
                registry.faults[bad] = fault
                message = self.assert_pull_fails(name, bad)
                blob_file = os.path.join(self.daemon.root, "blobs", "sha256", bad.split(":")[1])
                if os.path.exists(blob_file):
                    with open(blob_file, "rb") as f:
                        self.assertEqual(digest_of(f.read()), bad, f"the store kept the bad blob ({message})")
            # The same registry, its blob right again: the pull works.
            registry.faults.clear()
            self.daemon.client("pull", name)
            self.assertEqual(self.daemon.image_id(name), image.config_digest)

    def test_blob_that_ends_early_is_refused(self):
        registry = self.fake()
        image = FakeImage([layer_tar([tar_entry("big", data=os.urandom(256 << 10))])])
        registry.add("t/short", "1", image)
        name = f"{registry.host}/t/short:1"
        layer = image.layer_digests[0]
        registry.faults[layer] = "short"  # the connection closes before Content-Length bytes came
        message = self.assert_pull_fails(name, "transfer closed", "ended after", "partial")
        self.assertIn(registry.host, message)
        registry.faults[layer] = "unsized"  # no Content-Length: only the size in the manifest tells
        message = self.assert_pull_fails(name, "ended after")
        self.assertIn(layer, message)
        registry.faults.clear()
        self.daemon.client("pull", name)

    def test_manifest_over_4_mib_is_refused(self):
        registry = self.fake()
        layers = [self.small_layer("manifest size\n")]
        at_limit, over = padded_image(layers, MANIFEST_LIMIT), padded_image(layers, MANIFEST_LIMIT + 1)
        self.assertEqual((len(at_limit.manifest), len(over.manifest)), (MANIFEST_LIMIT, MANIFEST_LIMIT + 1))
        registry.add("t/huge", "over", over)
        registry.add("t/huge", "at-limit", at_limit)
        self.assert_pull_fails(f"{registry.host}/t/huge:over", "larger than 4 MiB")
        self.assertEqual(registry.blob_requests(), [], "blobs fetched for a refused manifest")
        self.daemon.client("pull", f"{registry.host}/t/huge:at-limit")

    def test_unknown_layer_media_type_is_refused_by_name(self):
        registry = self.fake()
        media_type = "application/vnd.example.layer+lz4"
        image = FakeImage([self.small_layer("lz4, they say\n")], layer_media_type=media_type)
        registry.add("t/lz4", "1", image)
        self.assert_pull_fails(f"{registry.host}/t/lz4:1", media_type)
        self.assertEqual([d for d in registry.blob_requests() if d in image.layer_digests], [])

    def store_entries(self):
        """The blobs and snapshots in the daemon's store."""
        return {part: sorted(os.listdir(os.path.join(self.daemon.root, *part.split("/"))))
                for part in ("blobs/sha256", "snapshots")}

    def test_zstd_layers_are_pulled_and_a_build_runs_on_them(self):
        registry = self.fake()
        data = f"compressed with zstd {uuid.uuid4()}\n"
        image = FakeImage([self.base_layer, layer_tar([tar_entry("zstd", tarfile.DIRTYPE, mode=0o755),
                                                       tar_entry("zstd/data", data=data.encode())])],
                          layer_media_type=ZSTD_LAYER)
        for digest in image.layer_digests:
            self.assertEqual(image.blobs[digest][:4], b"\x28\xb5\x2f\xfd", "not a zstd frame")
        registry.add("t/zstd", "1", image)
        name = f"{registry.host}/t/zstd:1"
        pulled = self.daemon.client("pull", name)
        self.assertIn(f"Digest: {image.digest}", pulled.stdout)
        self.assertEqual(self.daemon.image_id(name), image.config_digest)
        ctx = self.context(f"FROM {name}\nRUN cat /zstd/data > /copied && echo ran > /ran\n")
        out = self.path("rootfs.tar")
        self.build(ctx, "-o", f"type=tar,dest={out}")
        with tarfile.open(out) as tar:
            self.assertEqual(tar.extractfile("zstd/data").read().decode(), data)
            self.assertEqual(tar.extractfile("copied").read().decode(), data)
            self.assertEqual(tar.extractfile("ran").read(), b"ran\n")

    def test_zstd_layer_that_is_corrupt_or_not_its_digest_leaves_nothing(self):
        registry = self.fake()
        tar = self.small_layer(f"zstd fault {uuid.uuid4()}\n")
        # Below the faulty layer, one that is fine: it comes and unpacks, then goes with the rest.
        image = FakeImage([self.base_layer, tar], layer_media_type=ZSTD_LAYER)
        layer = image.layer_digests[1]
        registry.add("t/zstd-digest", "1", image)
        name = f"{registry.host}/t/zstd-digest:1"
        before = self.store_entries()
        for fault in ("corrupt", "long"):
            registry.faults[layer] = fault
            self.assert_pull_fails(name, layer)
            self.assertEqual(self.store_entries(), before, f"what the pull of a {fault} blob left")
        registry.faults.clear()

        # A blob that is its digest but no zstd a decoder finishes: a frame cut short, and one
        # whose compressed bytes are flipped (zstd's checksum of the content tells).
        frame = zstd_compress(tar)
        broken = {"cut": frame[:len(frame) // 2],
                  "flipped": frame[:12] + bytes(b ^ 0x5A for b in frame[12:-4]) + frame[-4:]}
        for kind, blob in broken.items():
            bad = FakeImage([self.base_layer, tar], layer_media_type=ZSTD_LAYER)
            manifest = json.loads(bad.manifest)
            manifest["layers"][1].update(digest=digest_of(blob), size=len(blob))
            bad.blobs = {d: b for d, b in bad.blobs.items() if d != bad.layer_digests[1]}
            bad.blobs[digest_of(blob)] = blob
            bad.manifest = json.dumps(manifest).encode()
            bad.digest = digest_of(bad.manifest)
            registry.add(f"t/zstd-{kind}", "1", bad)
            message = self.assert_pull_fails(f"{registry.host}/t/zstd-{kind}:1", "malformed layer")
            self.assertIn(digest_of(blob), message)
            self.assertEqual(self.store_entries(), before, f"what the pull of a {kind} zstd layer left")
        self.daemon.client("pull", name)
        self.assertEqual(self.daemon.image_id(name), image.config_digest)

    def test_index_gives_the_platform_asked_for(self):
        registry = self.fake()
        images = {arch: FakeImage([self.small_layer(f"{arch}\n")], architecture=arch) for arch in ("arm64", "amd64")}
        registry.add_index("t/multi", "1", list(images.values()))
        name = f"{registry.host}/t/multi:1"
        self.daemon.client("pull", name)
        self.assertEqual(self.daemon.image_id(name), images["amd64"].config_digest)
        self.daemon.client("pull", "--platform", "linux/arm64", name)
        self.assertEqual(self.daemon.image_id(name), images["arm64"].config_digest)
        self.daemon.client("rmi", name)
        message = self.failing(self.daemon.client("pull", "--platform", "linux/s390x", name, check=False))
        self.assertIn("linux/s390x", message)
        self.assertNotIn(name, self.daemon.names())

    def test_bearer_token_from_the_realm_with_the_callers_credentials(self):
        user, password = "tokenuser", "pw-" + uuid.uuid4().hex
        registry = self.fake()
        right = docker_config(self.path("right"), {registry.host: (user, password)})
        # A registry that asks for nothing is sent no credentials.
        public = FakeImage([self.small_layer(f"public {uuid.uuid4()}\n")])
        registry.add("t/app", "0", public)
        self.daemon.client("pull", f"{registry.host}/t/app:0", credentials=right)
        self.assertEqual({a for _, _, a in registry.requests}, {""}, "credentials sent unasked")

        registry.bearer = (user, password)
        image = FakeImage([self.small_layer(f"behind a token {uuid.uuid4()}\n")])
        registry.add("t/app", "1", image)
        name = f"{registry.host}/t/app:1"
        registry.requests.clear()

        self.assert_pull_fails(name, "unauthorized", "authoriz", "401")
        wrong = docker_config(self.path("wrong"), {registry.host: (user, "not-" + password)})
        self.assert_pull_fails(name, "unauthorized", "incorrect", credentials=wrong)
        self.assertEqual(registry.blob_requests(), [])

        self.daemon.client("pull", name, credentials=right)
        self.assertEqual(self.daemon.image_id(name), image.config_digest)
        query, authorization = registry.token_requests[-1]
        self.assertEqual((query.get("service"), query.get("scope")), (["fake"], ["repository:t/app:pull"]))
        self.assertEqual(authorization, "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        answered = [(m, p, a) for m, p, a in registry.requests if "/manifests/" in p or "/blobs/" in p]
        self.assertTrue(any(a == "Bearer " + registry.token for _, _, a in answered), answered)

        # Blobs redirected to object storage: found there, and the token stays with the registry.
        # The token server answering {"access_token": ...} instead, as some do.
        blob_store = self.fake()
        redirected = FakeImage([self.small_layer(f"in object storage {uuid.uuid4()}\n")])
        blob_store.blobs.update(redirected.blobs)
        registry.add("t/app", "2", redirected)
        registry.blob_store, registry.token_field = blob_store, "access_token"
        self.daemon.client("pull", f"{registry.host}/t/app:2", credentials=right)
        self.assertEqual(self.daemon.image_id(f"{registry.host}/t/app:2"), redirected.config_digest)
        self.assertTrue(blob_store.requests)
        self.assertEqual({a for _, _, a in blob_store.requests}, {""}, "credentials sent to the blob store")
        self.assertNotIn(password, self.daemon.log())

    def refresh_token_server(self, registry, refresh_token, login=None):
        """A token server on a port of its own, named as `registry`'s realm, that answers only
        Docker's OAuth2 refresh-token grant for `refresh_token` (a form POST, client_id kbuild)
        with the registry's token, and, with `login` = (user, password), docker login's GET
        (Basic, offline_token=true) with a token and `refresh_token`. `requests` records
        (method, path, headers, body) of everything it is sent."""
        server = type("TokenServer", (), {"requests": []})()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, document):
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                server.requests.append(("GET", self.path, dict(self.headers), ""))
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                basic = "Basic " + base64.b64encode(":".join(login or ("", "")).encode()).decode()
                if login and self.headers.get("Authorization") == basic and query.get("offline_token") == ["true"] \
                        and query.get("client_id") == ["kbuild"]:
                    return self.reply(200, {"token": registry.token, "refresh_token": refresh_token})
                self.reply(401, {"details": "incorrect username or password"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                server.requests.append(("POST", self.path, dict(self.headers), body))
                form = urllib.parse.parse_qs(body, keep_blank_values=True)
                if self.headers.get("Content-Type") != "application/x-www-form-urlencoded" or \
                        form.get("grant_type") != ["refresh_token"] or form.get("client_id") != ["kbuild"]:
                    return self.reply(400, {"error": "unsupported_grant_type"})
                if form.get("refresh_token") != [refresh_token]:
                    return self.reply(400, {"error": "invalid_grant", "error_description": "refresh token expired"})
                self.reply(200, {"access_token": registry.token, "expires_in": 300,
                                 "scope": form.get("scope", [""])[0]})

        http_server = _HttpServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=http_server.serve_forever, daemon=True).start()
        self.addCleanup(http_server.server_close)
        self.addCleanup(http_server.shutdown)
        registry.bearer = ("nobody", "no password takes this registry's own /token")
        registry.realm = f"http://127.0.0.1:{http_server.server_address[1]}/token"
        return server

    def assert_secrets_nowhere(self, secrets, shown):
        """None of `secrets` in kbuildd's log, in what the client printed (`shown`), or in a file
        of the store."""
        for secret in secrets:
            self.assertNotIn(secret, self.daemon.log(), "kbuildd's log")
            for text in shown:
                self.assertNotIn(secret, text, "the client's output")
        for top, _, files in os.walk(self.daemon.root):
            for file in files:
                path = os.path.join(top, file)
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as f:
                        data = f.read()
                    for secret in secrets:
                        self.assertNotIn(secret.encode(), data, f"the store's {path}")

    def test_identity_token_is_traded_at_the_realm_with_a_refresh_token_grant(self):
        refresh, expired = "refresh-" + uuid.uuid4().hex, "expired-" + uuid.uuid4().hex
        registry = self.fake()
        server = self.refresh_token_server(registry, refresh)
        image = FakeImage([self.small_layer(f"behind an identity token {uuid.uuid4()}\n")])
        registry.add("t/app", "1", image)
        name = f"{registry.host}/t/app:1"
        shown = []

        # As docker login leaves it: "user:" and the token.
        config = self.path("token-config")
        write(os.path.join(config, "config.json"), json.dumps({"auths": {registry.host: {
            "auth": base64.b64encode(b"tokenuser:").decode(), "identitytoken": refresh}}}))
        pulled = self.daemon.client("pull", name, credentials=config)
        shown.append(pulled.stdout + pulled.stderr)
        self.assertEqual(self.daemon.image_id(name), image.config_digest)
        self.assertTrue(server.requests)
        for method, path, headers, body in server.requests:
            self.assertEqual((method, path), ("POST", "/token"))
            self.assertEqual(headers.get("Content-Type"), "application/x-www-form-urlencoded")
            self.assertNotIn("Authorization", headers)
            self.assertEqual(urllib.parse.parse_qs(body, keep_blank_values=True),
                             {"grant_type": ["refresh_token"], "refresh_token": [refresh], "client_id": ["kbuild"],
                              "service": ["fake"], "scope": ["repository:t/app:pull"]})
        answered = [a for _, p, a in registry.requests if "/manifests/" in p or "/blobs/" in p]
        self.assertIn("Bearer " + registry.token, answered)
        for method, path, authorization in registry.requests:
            self.assertNotIn(refresh, path + authorization, "the identity token went to the registry")

        # From a credential helper (docker's "<token>" user), for a build that pulls its base.
        helpers = self.path("bin")
        write(os.path.join(helpers, "docker-credential-kbuildtoken"),
              f"#!/bin/sh\nread server\n[ \"$server\" = \"{registry.host}\" ] || exit 1\n"
              f"printf '{{\"ServerURL\":\"%s\",\"Username\":\"<token>\",\"Secret\":\"{refresh}\"}}' \"$server\"\n",
              mode=0o755)
        helped = docker_config(self.path("helper-config"), credsStore="kbuildtoken")
        server.requests.clear()
        out = self.path("rootfs.tar")
        built = self.build(self.context(f"FROM {name}\nCOPY f /f\n", {"f": "on the token's image\n"}),
                           "--pull", "-o", f"type=tar,dest={out}", credentials=helped, path=helpers)
        shown.append(built.stdout + built.stderr)
        with tarfile.open(out) as tar:
            self.assertEqual(tar.extractfile("f").read(), b"on the token's image\n")
        self.assertEqual({(m, p) for m, p, _, _ in server.requests}, {("POST", "/token")})
        self.assertTrue(all(f"refresh_token={refresh}" in body for _, _, _, body in server.requests))

        # A token the server no longer takes: one clear error, and nothing pulled.
        self.daemon.client("rmi", name)
        stale = self.path("stale-config")
        write(os.path.join(stale, "config.json"), json.dumps({"auths": {registry.host: {"identitytoken": expired}}}))
        message = self.assert_pull_fails(name, "identity token", credentials=stale)
        self.assertIn("invalid_grant", message)
        shown.append(message)
        self.assertIn(f"refresh_token={expired}", server.requests[-1][3])
        self.assert_secrets_nowhere([refresh, expired], shown)

    def test_a_basic_auth_registry_is_not_given_an_identity_token(self):
        htpasswd = self.path("htpasswd")
        write(htpasswd, run(["htpasswd", "-Bbn", "builder", "pw-" + uuid.uuid4().hex]).stdout)
        registry = self.distribution("basic", htpasswd=htpasswd)
        refresh = "refresh-" + uuid.uuid4().hex
        config = self.path("token-config")
        write(os.path.join(config, "config.json"), json.dumps({"auths": {registry.host: {"identitytoken": refresh}}}))
        message = self.assert_pull_fails(f"{registry.host}/t/app:1", "only an identity token", credentials=config)
        self.assertNotIn(refresh, message)
        self.assertNotIn(refresh, registry.log())
        self.assert_secrets_nowhere([refresh], [message])

    def test_login_keeps_the_identity_token_the_token_server_gives_as_docker_does(self):
        user, password, refresh = "tokenuser", "pw-" + uuid.uuid4().hex, "refresh-" + uuid.uuid4().hex
        registry = self.fake()
        server = self.refresh_token_server(registry, refresh, login=(user, password))
        image = FakeImage([self.small_layer(f"after login {uuid.uuid4()}\n")])
        registry.add("t/app", "1", image)
        name = f"{registry.host}/t/app:1"
        config_dir = self.path("login-config")
        os.makedirs(self.path(), exist_ok=True)
        ok = self.daemon.client("login", "-u", user, "--password-stdin", registry.host, credentials=config_dir,
                                input=password + "\n")
        self.assertEqual(ok.stdout, "Login Succeeded\n")
        with open(os.path.join(config_dir, "config.json")) as f:
            text = f.read()
        self.assertNotIn(password, text)
        self.assertEqual(json.loads(text)["auths"][registry.host],
                         {"auth": base64.b64encode(f"{user}:".encode()).decode(), "identitytoken": refresh})
        server.requests.clear()
        self.daemon.client("pull", name, credentials=config_dir)
        self.assertEqual(self.daemon.image_id(name), image.config_digest)
        self.assertEqual({(m, p) for m, p, _, _ in server.requests}, {("POST", "/token")})

        # With a credential helper, the token is what it keeps, under docker's "<token>" user.
        helpers, kept = self.path("bin"), self.path("kept.json")
        write(os.path.join(helpers, "docker-credential-kbuildkeep"),
              f"#!/bin/sh\ncase \"$1\" in store) cat > {kept} ;; get) cat {kept} ;; *) exit 1 ;; esac\n", mode=0o755)
        helped = docker_config(self.path("helper-config"), credsStore="kbuildkeep")
        self.daemon.client("login", "-u", user, "--password-stdin", registry.host, credentials=helped, path=helpers,
                           input=password + "\n")
        with open(kept) as f:
            self.assertEqual(json.load(f), {"ServerURL": registry.host, "Username": "<token>", "Secret": refresh})
        self.daemon.client("rmi", name)
        server.requests.clear()
        pulled = self.daemon.client("pull", name, credentials=helped, path=helpers)
        self.assertEqual({(m, p) for m, p, _, _ in server.requests}, {("POST", "/token")})
        self.assert_secrets_nowhere([password, refresh], [ok.stdout + ok.stderr, pulled.stdout + pulled.stderr])

    # -- hostile layers -------------------------------------------------------------------------

    def test_hostile_layers_write_nowhere_outside_their_snapshot(self):
        marker = "kbuild-evil-" + uuid.uuid4().hex[:8]
        up = "../" * 40
        cases = {
            "dotdot": [tar_entry(f"../{marker}-up")],
            "dotdot-deep": [tar_entry(f"{up}tmp/{marker}-deep")],
            "absolute": [tar_entry(f"/etc/{marker}-abs"), tar_entry(f"/tmp/{marker}-abs")],
            "symlink-root": [tar_entry("link", tarfile.SYMTYPE, target="/"),
                             tar_entry(f"link/tmp/{marker}-link")],
            "symlink-up": [tar_entry("uplink", tarfile.SYMTYPE, target=up + "tmp"),
                           tar_entry(f"uplink/{marker}-uplink")],
            "symlink-file": [tar_entry("passwd-symlink", tarfile.SYMTYPE, target="/etc/passwd"),
                             tar_entry("passwd-symlink", data=f"{marker}\n".encode())],
            "hardlink": [tar_entry("passwd-link", tarfile.LNKTYPE, target="/etc/passwd"),
                         tar_entry("passwd-link", data=f"{marker}\n".encode())],
            "hardlink-up": [tar_entry("passwd-up", tarfile.LNKTYPE, target=up + "etc/passwd")],
            # The layer's own /etc/passwd: the link is to it, and the file that replaces the link
            # does not write through it.
            "hardlink-own": [tar_entry("etc", tarfile.DIRTYPE, mode=0o755),
                             tar_entry("etc/passwd", data=LAYER_PASSWD.encode()),
                             tar_entry("passwd-link", tarfile.LNKTYPE, target="/etc/passwd"),
                             tar_entry("passwd-link", data=f"{marker}\n".encode())],
            # Debian's own /var/run -> /run, at a host path that exists: a file under it lands
            # in the layer's /run, or nowhere.
            "var-run": [tar_entry("var", tarfile.DIRTYPE, mode=0o755),
                        tar_entry("var/run", tarfile.SYMTYPE, target="/run"),
                        tar_entry(f"var/run/{marker}-run")],
            "var-run-relative": [tar_entry("var", tarfile.DIRTYPE, mode=0o755),
                                 tar_entry("var/run", tarfile.SYMTYPE, target="../run"),
                                 tar_entry(f"var/run/{marker}-run-relative")],
            "var-run-own": [tar_entry("run", tarfile.DIRTYPE, mode=0o755),
                            tar_entry("var", tarfile.DIRTYPE, mode=0o755),
                            tar_entry("var/run", tarfile.SYMTYPE, target="/run"),
                            tar_entry(f"var/run/{marker}-run-own")],
            "var-run-own-relative": [tar_entry("run", tarfile.DIRTYPE, mode=0o755),
                                     tar_entry("var", tarfile.DIRTYPE, mode=0o755),
                                     tar_entry("var/run", tarfile.SYMTYPE, target="../run"),
                                     tar_entry(f"var/run/{marker}-run-own-relative")],
            # A hardlink made through a symlink to a host directory, by its name or its target.
            "hardlink-into-symlinked-dir": [tar_entry("runlink", tarfile.SYMTYPE, target="/run"),
                                            tar_entry(f"own-{marker}", data=b"the layer's\n"),
                                            tar_entry(f"runlink/{marker}-hardlink", tarfile.LNKTYPE,
                                                      target=f"own-{marker}")],
            "hardlink-through-symlinked-dir": [tar_entry("etclink", tarfile.SYMTYPE, target="../" * 8 + "etc"),
                                               tar_entry("passwd-through", tarfile.LNKTYPE,
                                                         target="etclink/passwd"),
                                               tar_entry("passwd-through", data=f"{marker}\n".encode())],
            "hardlink-through-symlinked-own-dir": [tar_entry("etc", tarfile.DIRTYPE, mode=0o755),
                                                   tar_entry("etc/passwd", data=LAYER_PASSWD.encode()),
                                                   tar_entry("etclink", tarfile.SYMTYPE, target="/etc"),
                                                   tar_entry("passwd-through", tarfile.LNKTYPE,
                                                             target="etclink/passwd"),
                                                   tar_entry("passwd-through", data=f"{marker}\n".encode())],
        }
        # Where the contained cases' files must be: in the layer's own /run.
        lands = {"var-run-own": f"run/{marker}-run-own", "var-run-own-relative": f"run/{marker}-run-own-relative"}

        def passwd_state():
            st = os.stat("/etc/passwd")
            with open("/etc/passwd", "rb") as f:
                return digest_of(f.read()), st.st_ino, st.st_nlink, st.st_mtime_ns, st.st_size
        before = passwd_state()
        snapshots = os.path.join(self.daemon.root, "snapshots")

        def outside():
            """Paths named with the marker that are not inside a snapshot's diff dir."""
            found = []
            for top in sorted({"/", "/tmp", "/etc", "/root", "/run", os.path.dirname(self.workdir)}):
                found += [os.path.join(top, n) for n in os.listdir(top) if marker in n]
            for top, dirs, files in os.walk(self.workdir):
                rel = os.path.relpath(top, snapshots).split(os.sep)
                inside = len(rel) >= 2 and rel[0] not in ("..", ".") and rel[1] == "diff"
                found += [os.path.join(top, n) for n in dirs + files if marker in n and not inside]
            return found

        registry = self.fake()
        outcomes = {}
        for case, entries in cases.items():
            image = FakeImage([self.base_layer, layer_tar(entries)])
            registry.add(f"t/{case}", "1", image)
            name = f"{registry.host}/t/{case}:1"
            pulled = self.daemon.client("pull", name, check=False)
            if pulled.returncode != 0:
                message = pulled.stderr.strip()
                self.assertIn("ERROR", message)
                self.assertNotIn(name, self.daemon.names())
                outcomes[case] = "refused: " + message
            else:
                # Contained: a build on it runs, and what its layer made is in the image only.
                out = self.path(f"{case}.tar")
                ctx = self.context(f"FROM {name}\nRUN ls -la / /etc /tmp > /dev/null\n", name=f"ctx-{case}")
                self.build(ctx, "-o", f"type=tar,dest={out}")
                with tarfile.open(out) as tar:
                    made = sorted(m.name for m in tar.getmembers() if marker in m.name
                                  or m.name.lstrip("./") in ("link", "uplink", "passwd-link", "passwd-symlink",
                                                             "passwd-through", "var/run", "runlink", "etclink"))
                    image_passwd = tar.extractfile("etc/passwd").read()
                own = ("hardlink-own", "hardlink-through-symlinked-own-dir")
                expected = LAYER_PASSWD if case in own else base_image.PASSWD
                self.assertEqual(image_passwd.decode(), expected, f"{case}: the image's /etc/passwd")
                if case in lands:
                    self.assertIn(lands[case], made)
                outcomes[case] = f"contained: {made}"
            self.assertEqual(outside(), [], f"{case} wrote outside its snapshot ({outcomes[case]})")
            self.assertEqual(passwd_state(), before, f"{case} changed the host's /etc/passwd")
        print("\n" + "\n".join(f"  {case}: {what}" for case, what in outcomes.items()), file=sys.stderr)

    def device_node(self, name, kind, major, minor):
        info, data = tar_entry(name, kind, mode=0o666)
        info.devmajor, info.devminor = major, minor
        return info, data

    def test_device_nodes_in_a_layer_open_no_host_device_in_a_build(self):
        # The host's first disk, as /proc/partitions lists it: reading it would read the host's files.
        with open("/proc/partitions") as f:
            major, minor = (int(n) for n in f.read().split("\n")[2].split()[:2])
        lower = layer_tar([tar_entry("gone", data=b"lower\n"), tar_entry("gone-too", data=b"lower\n")])
        devices = layer_tar([self.device_node("mem", tarfile.CHRTYPE, 1, 1),
                             self.device_node("null-node", tarfile.CHRTYPE, 1, 3),
                             self.device_node("disk", tarfile.BLKTYPE, major, minor),
                             tar_entry("fifo", tarfile.FIFOTYPE),
                             # Whiteouts, as a .wh. file and as overlayfs's own 0/0 node.
                             tar_entry(".wh.gone"),
                             self.device_node("gone-too", tarfile.CHRTYPE, 0, 0)])
        registry = self.fake()
        registry.add("t/devices", "1", FakeImage([self.base_layer, lower, devices]))
        name = f"{registry.host}/t/devices:1"
        self.daemon.client("pull", name)  # as Docker does: layers may carry device nodes

        # A step sees them, and the whiteouts hide the lower files.
        ok = self.context(f"FROM {name}\nRUN test -c /mem && test -c /null-node && test -b /disk && test -p /fifo "
                          "&& test ! -e /gone && test ! -e /gone-too && echo ran > /ran\n", name="ok")
        self.build(ok, "-o", f"type=tar,dest={self.path('ok.tar')}")
        with tarfile.open(self.path("ok.tar")) as tar:
            names = set(tar.getnames())
        self.assertIn("ran", names)
        self.assertFalse({"gone", "gone-too"} & names, names)

        # But none of them opens: the rootfs, and a bind mount of the image, are nodev.
        steps = {"mem": f"FROM {name}\nRUN cat /mem > /dev/null",
                 "disk": f"FROM {name}\nRUN head -c1 /disk > /dev/null",
                 "null-write": f"FROM {name}\nRUN echo x > /null-node",
                 "bind-mount": f"FROM {BASE}\nRUN --mount=type=bind,from={name},target=/m head -c1 /m/disk > /dev/null",
                 "copied": f"FROM {BASE}\nCOPY --from={name} /disk /copied\nRUN head -c1 /copied > /dev/null"}
        refused = {}
        for case, dockerfile in steps.items():
            result = self.build(self.context(dockerfile + "\n", name=f"ctx-{case}"), check=False)
            message = self.failing(result)
            self.assertIn("Permission denied", message, f"{case}: {message[-2000:]}")
            refused[case] = next(line for line in message.splitlines() if "Permission denied" in line)
        print("\n" + "\n".join(f"  {case}: {line.strip()}" for case, line in refused.items()), file=sys.stderr)

    def daemon_memory_mib(self, field):
        """kbuildd's VmRSS or VmHWM (its peak since reset_peak_rss()), in MiB."""
        with open(f"/proc/{self.daemon.process.pid}/status") as f:
            return int(re.search(field + r":\s+(\d+) kB", f.read()).group(1)) / 1024

    def reset_peak_rss(self):
        """Makes the daemon's peak its current resident memory; returns that."""
        with open(f"/proc/{self.daemon.process.pid}/clear_refs", "w") as f:
            f.write("5")
        return self.daemon_memory_mib("VmRSS")

    def peak_rss_growth_mib(self, since):
        return self.daemon_memory_mib("VmHWM") - since

    def test_hostile_headers_fail_fast_and_take_no_memory(self):
        end = bytes(1024)

        def padded(data):
            return data + bytes(-len(data) % 512)

        def extent(offset, size):
            return b"%011o\0%011o\0" % (offset, size)
        # An old GNU sparse file whose map goes on for 128 MiB of extension blocks (21 extents
        # each, a few hundred KiB gzip'd): libarchive keeps every extent in memory.
        old_sparse = (ustar_header("sparse", b"S", 0, GNU_MAGIC, [(386, extent(0, 0) * 4), (482, b"\1")])
                      + (extent(0, 0) * 21 + b"\1" + bytes(7)) * ((128 << 20) // 512)
                      + extent(0, 0) * 21 + bytes(8) + end)
        # A pax GNU sparse 1.0 file whose map, in its data, lists 16M extents.
        count = 16 << 20
        sparse_map = padded(b"%d\n" % count + b"0\n0\n" * count)
        info, _ = tar_entry("GNUSparseFile.0/sparse")
        info.size = len(sparse_map)
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "sparse",
                            "GNU.sparse.realsize": "0"}
        sparse_10 = info.tobuf(tarfile.PAX_FORMAT) + sparse_map + end
        # A file of 8 GiB (its size in a pax record) whose data ends after 1 MiB.
        big, _ = tar_entry("big")
        big.size = 8 << 30
        cases = {
            "pax-header-of-4-gib": ustar_header("pax", b"x", 4 << 30) + b"30 path=never-read-this-far\n" * 4096,
            "pax-record-of-9-gb": ustar_header("pax", b"x", 512) + padded(b"9999999999 path=x\n")
                                  + ustar_header("f", b"0", 0) + end,
            "gnu-longname-of-8-mib": ustar_header("././@LongLink", b"L", 8 << 20, GNU_MAGIC) + b"n" * (8 << 20)
                                     + ustar_header("f", b"0", 0, GNU_MAGIC) + end,
            "gnu-longname-of-1-mb": ustar_header("././@LongLink", b"L", 1000001, GNU_MAGIC)
                                    + padded(b"d/" + b"n" * 999998 + b"\0")
                                    + ustar_header("f", b"0", 0, GNU_MAGIC) + end,
            "gnu-sparse-map-of-128-mib": old_sparse,
            "pax-sparse-map-of-64-mib": sparse_10,
            "size-of-8-gib-ending-after-1-mib": big.tobuf(tarfile.PAX_FORMAT) + bytes(1 << 20),
        }
        registry = self.fake()
        before = self.store_entries()
        outcomes = {}
        for case, tar in cases.items():
            image = FakeImage([self.base_layer, tar])
            registry.add(f"t/{case}", "1", image)
            name = f"{registry.host}/t/{case}:1"
            rss = self.reset_peak_rss()
            started = time.monotonic()
            pulled = self.daemon.client("pull", name, check=False)
            took, peak = time.monotonic() - started, self.peak_rss_growth_mib(rss)
            if pulled.returncode != 0:
                message = pulled.stderr.strip()
                self.assertIn(image.layer_digests[1], message, f"{case}: the error does not name the layer")
                self.assertLess(len(message), 1000, f"{case}: {message[:1000]}")
                self.assertNotIn(name, self.daemon.names())
                self.assertEqual(self.store_entries(), before, f"{case}: what the failed pull left")
                outcomes[case] = f"refused in {took:.1f}s, RSS +{peak:.0f} MiB at most: {message}"
            else:
                outcomes[case] = f"pulled in {took:.1f}s, RSS +{peak:.0f} MiB at most"
                before = self.store_entries()
            self.assertLess(took, 30, f"{case}: {outcomes[case]}")
            self.assertLess(peak, 100, f"{case}: {outcomes[case]}")
        print("\n" + "\n".join(f"  {case}: {what}" for case, what in outcomes.items()), file=sys.stderr)
        ctx = self.context(f"FROM {BASE}\nRUN echo still builds > /ok\n")
        self.build(ctx)

    # -- bombs: layers of GiBs of zeros, a few MB compressed --------------------------------------

    def snapshot_file(self, name):
        """os.stat of the file `name` in the daemon's snapshots, committed or not; None if none has it."""
        snapshots = os.path.join(self.daemon.root, "snapshots")
        for entry in os.listdir(snapshots):
            try:
                return os.stat(os.path.join(snapshots, entry, "diff", name))
            except OSError:
                continue
        return None

    def test_zero_bombs_are_extracted_as_holes(self):
        size = 2 << 30
        registry = self.fake()
        for media_type in (GZIP_LAYER, ZSTD_LAYER):
            marker = "zeros-" + uuid.uuid4().hex[:8]
            started = time.monotonic()
            layer = compressed_layer(zeros_layer(marker, size), media_type)
            made = time.monotonic() - started
            image = FakeImage([self.base_layer, layer], layer_media_type=media_type)
            kind = media_type.rsplit("+", 1)[1]
            registry.add(f"t/bomb-{kind}", "1", image)
            name = f"{registry.host}/t/bomb-{kind}:1"
            rss = self.reset_peak_rss()
            started = time.monotonic()
            self.daemon.client("pull", name)
            took, peak = time.monotonic() - started, self.peak_rss_growth_mib(rss)
            st = self.snapshot_file(marker)
            self.assertIsNotNone(st, f"no snapshot holds /{marker}")
            self.assertEqual(st.st_size, size)
            self.assertLess(st.st_blocks * 512, 1 << 20, f"{kind}: 2 GiB of zeros took disk")
            self.assertLess(peak, 100)
            print(f"\n  {kind}: a {len(layer[0]) >> 10} KiB layer of {size >> 30} GiB of zeros (made in {made:.1f}s) "
                  f"pulled in {took:.1f}s, {st.st_blocks * 512 >> 10} KiB on disk, RSS +{peak:.0f} MiB at most",
                  file=sys.stderr)
            ctx = self.context(f"FROM {name}\nRUN test \"$(stat -c %s /{marker})\" = {size} && echo ran > /ran\n",
                               name=f"ctx-{kind}")
            self.build(ctx)

    def test_a_client_that_leaves_stops_the_extraction_of_a_bomb(self):
        # 8 GiB of zeros, 8 MB gzip'd: seconds of decompressing and hashing. Its diff_id is right:
        # left to its end, the pull would name the image and keep its blobs.
        size, marker = 8 << 30, "zeros-" + uuid.uuid4().hex[:8]
        registry = self.fake()
        image = FakeImage([self.base_layer, compressed_layer(zeros_layer(marker, size), GZIP_LAYER)])
        registry.add("t/bomb-left", "1", image)
        name = f"{registry.host}/t/bomb-left:1"
        before = self.store_entries()
        pull = BackgroundPull(self.daemon, name)
        try:
            self.assertTrue(wait_until(lambda: self.snapshot_file(marker) is not None, 60, 0.05),
                            f"the extraction did not start: {pull.wait(0)}")
        finally:
            pull.kill()
        left = time.monotonic()
        self.assertTrue(wait_until(lambda: self.store_entries() == before and not self.daemon.blob_temp_files(), 10),
                        f"10 s after its client left, the pull still has {self.store_entries()} "
                        f"(before: {before}), temp files {self.daemon.blob_temp_files()}")
        print(f"\n  the extraction stopped, and its snapshot and blobs were gone, "
              f"{time.monotonic() - left:.1f}s after the client left", file=sys.stderr)
        self.assertNotIn(name, self.daemon.names())
        # The next pull of it is whole (its extraction runs to the end: only its start is checked).
        ctx = self.context(f"FROM {BASE}\nRUN echo still builds > /ok\n")
        self.build(ctx)

    # -- silence (the pulls started in setUpClass) -----------------------------------------------

    def test_silent_registries_time_out_and_a_gone_client_cancels(self):
        if not self.silent:
            self.fail("the silent registries' pulls were not started (main() sets run_silent)")
        # Silent from the start (TLS ClientHello unanswered): the handshake is given up after
        # the connect timeout, and that is the pull's end: a server that does not answer is not
        # one that speaks plain HTTP, so none is tried.
        mute, mute_pull = self.silent["mute"]
        status, err, took = mute_pull.wait(max(1, CONNECT_SECONDS + SLACK - (time.monotonic() - mute_pull.started)))
        self.assertIsNotNone(status, f"the pull still runs after {took:.0f}s: {mute.events}")
        self.assertNotEqual(status, 0, err)
        self.assertIn("timed out", err)
        self.assertIn(mute.host, err)
        self.assertGreater(took, CONNECT_SECONDS - 5)
        self.assertIsNone(mute.find("GET /v2/"), f"plain HTTP was tried after a TLS timeout: {mute.events}")
        print(f"\n  mute registry: the pull failed after {took:.1f}s: {err.strip()}", file=sys.stderr)

        # Answers the ping, then silent, and the client goes away: the daemon drops the
        # connection it still waits on.
        left = SilentRegistry(True)
        self.addCleanup(left.close)
        left_pull = BackgroundPull(self.daemon, f"{left.host}/t/app:1")
        self.addCleanup(left_pull.kill)
        self.assertTrue(wait_until(lambda: left.find("GET /v2/t/app/manifests"), 10, 0.1), left.events)
        _, waiting = left.find("GET /v2/t/app/manifests")
        self.assertIsNone(left.closed(waiting), f"the daemon gave up before its client left: {left.events}")
        killed = time.monotonic() - left.started
        left_pull.kill()
        self.assertTrue(wait_until(lambda: left.closed(waiting) is not None, 10, 0.1),
                        f"the daemon still waits on the registry 10 s after its client left: {left.events}")
        print(f"  dropped {left.closed(waiting) - killed:.1f}s after the client left", file=sys.stderr)

        # Answers the ping, then silent: the pull fails after the low-speed limit.
        quiet, pull = self.silent["after-ping"]
        status, err, took = pull.wait(max(1, LOW_SPEED_SECONDS + SLACK - (time.monotonic() - pull.started)))
        self.assertIsNotNone(status, f"the pull still runs after {took:.0f}s: {quiet.events}")
        self.assertNotEqual(status, 0, err)
        self.assertIn("timed out", err)
        self.assertIn(quiet.host, err)
        self.assertGreater(took, LOW_SPEED_SECONDS - 5)
        self.assertNotIn(f"{quiet.host}/t/app:1", self.daemon.names())
        print(f"  registry silent after its ping: the pull failed after {took:.1f}s: {err.strip()}", file=sys.stderr)


# Runs last: it waits for the pulls that setUpClass started.
LAST = ["test_silent_registries_time_out_and_a_gone_client_cancels"]


def test_order(a, b):
    key = lambda name: (LAST.index(name) if name in LAST else -1, name)  # noqa: E731
    return (key(a) > key(b)) - (key(a) < key(b))


def main():
    global BUILD_DIR
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", default=os.environ.get("KBUILD_BUILD_DIR", "build"))
    parser.add_argument("-k", dest="pattern")
    args = parser.parse_args()
    BUILD_DIR = os.path.abspath(args.build_dir)
    if os.geteuid() != 0:
        print("registry tests need root (they run a root daemon)", file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt(f"signal {s}")))
    loader = unittest.TestLoader()
    loader.sortTestMethodsUsing = test_order
    if args.pattern:
        loader.testNamePatterns = [f"*{args.pattern}*"]
    suite = loader.loadTestsFromTestCase(RegistryTest)
    RegistryTest.run_silent = any(t.id().endswith("." + LAST[0]) for t in suite)
    try:
        result = unittest.TextTestRunner(verbosity=2).run(suite)
    except KeyboardInterrupt:
        print("registry: interrupted", file=sys.stderr)
        if getattr(RegistryTest, "workdir", None) and os.path.exists(RegistryTest.workdir):
            RegistryTest.tearDownClass()  # daemons, registries and pulls stopped, the temp dir removed
        return 130
    failed = len(result.failures) + len(result.errors)
    print(f"registry: {result.testsRun - failed - len(result.skipped)} passed, {failed} failed, "
          f"{len(result.skipped)} skipped")
    return 0 if failed == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
