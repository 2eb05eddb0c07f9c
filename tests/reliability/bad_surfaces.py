"""Bad inputs beyond ``--source``: downloads, ``--backbone``, ``tfpipe predict``, ``--set`` and CLI arguments.

Each ``BadSurface`` builds one ``tfpipe`` command line that hands tfpipe something broken (writing whatever
files it needs below ``Env.tmp``) and says how tfpipe must refuse it: exit code, the named error, what the
one-line message must name and a fragment of it. ``test_bad_inputs.py`` runs them (in process, or in a
subprocess where a timeout must bound the run) with the same assertions as the ``--source`` catalogue of
``bad_sources.py``.

``python -m tests.reliability.bad_surfaces --markdown`` prints the table of every case, both catalogues,
for the docs: the doc is made from the lists the tests run, so the two cannot disagree.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.reliability.bad_sources import BAD_SOURCES, BadSource

TASK_FAILED = 30  # [retcode] task_failed in luigi.cfg: a stage refused its input
USAGE_ERROR = 2  # cli.main (and argparse): refused before Luigi starts
ZERO_PIN = "sha256:" + "0" * 64  # a well-formed pin no body matches
DOWNLOAD_ERROR_BODY = 4096  # bytes the short-body route declares
SHORT_BODY = 512  # bytes it sends before closing the connection


# ---- what a case runs against ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Env:
    """The places a case's command line refers to. Fields a kind does not use keep their defaults."""

    tmp: Path  # the test's own folder: the case writes its inputs here
    root: Path  # the artifact root of the run
    url: str = ""  # base URL of the scripted loopback server (downloads), ending in "/"
    dead_url: str = ""  # http://127.0.0.1:<a port nobody listens on>/
    photos: Path = Path()  # a valid image folder (backbones)
    captchas: Path = Path()  # a valid captcha folder (--set, CLI)
    model: Path = Path()  # a valid frozen model directory (predict)
    good_image: Path = Path()  # an image that model predicts (predict)

    def shown(self) -> dict[str, str]:
        """Placeholders for the docs' table, in place of this machine's paths."""
        return {"tmp": "<tmp>", "root": "<root>", "url": "http://127.0.0.1:<port>/",
                "dead_url": "http://127.0.0.1:<dead port>/", "photos": "<photos>", "captchas": "<captchas>",
                "model": "<model>", "good_image": "<good.png>"}

    def values(self) -> dict[str, str]:
        return {name: str(getattr(self, name)) for name in self.shown()}


@dataclass(frozen=True)
class BadSurface:
    """One broken command line and how tfpipe must refuse it."""

    kind: str  # download, backbone, predict, set, cli
    case: str
    argv: Callable[[Env], list[str]]  # writes the case's inputs below env.tmp, returns the tfpipe arguments
    error: str  # the error class the log names (Luigi stage failures); "usage" = refused before Luigi starts
    names: str  # what the message line must name; ``str.format`` fields of ``Env`` (``{url}``, ``{tmp}``...)
    message: str  # a regular expression the message line must match
    code: int = USAGE_ERROR  # the exit status
    stage: str = ""  # the stage that fails and must commit nothing ("" = nothing at all may be committed)
    fast: bool = True  # in the default suite; else @slow
    registry_file: str = ""  # downloads: point the registry's cifar10 source at env.url + this file
    subprocess: bool = False  # run in a fresh process with a timeout (a run that might hang)
    timeout_s: float = 60.0  # subprocess only: the run must end within this
    argparse: bool = False  # refused by argparse: "tfpipe <command>: error: ..." after the usage lines
    luigi_settings: tuple[tuple[str, str, str], ...] = ()  # in process: (section, option, value) set for the run
    known_bug: str = ""  # a product bug the case shows (a strict xfail until fixed)

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.case}"

    def expected_names(self, env: Env) -> str:
        return self.names.format(**env.values())


# ---- a loopback server that misbehaves on purpose ---------------------------------------------------------
@dataclass
class Route:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    send: int | None = None  # body bytes actually sent before the connection closes (None: all)


class ScriptedServer:
    """127.0.0.1 on a free port; ``routes`` maps a path (no leading slash) to a `Route`, anything else is a 404.
    Use as a context manager; the thread is stopped and the socket closed on exit."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server is not running"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def __enter__(self) -> ScriptedServer:
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the test reads tfpipe's stderr."""

            def do_GET(self) -> None:
                route = routes.get(self.path.lstrip("/"), Route(404, b"no such file"))
                self.send_response(route.status)
                for name, value in {"Content-Length": str(len(route.body)), **route.headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(route.body[: route.send])

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def download_routes(official_archive: bytes) -> dict[str, Route]:
    """What the download cases fetch: an error status, a body cut short, a redirect to file://, and a fake
    'official' archive (whose bytes cannot match the registry's pinned digest)."""
    return {
        "error.tar.gz": Route(500, b"internal error"),
        "short.tar.gz": Route(200, b"\0" * DOWNLOAD_ERROR_BODY, send=SHORT_BODY),
        "redirect.tar.gz": Route(302, b"", {"Location": "file:///etc/passwd"}),
        "cifar-10-python.tar.gz": Route(200, official_archive),
    }


@contextlib.contextmanager
def dead_port() -> Iterator[int]:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed: connecting is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield port


# ---- argument builders --------------------------------------------------------------------------------------
def _download(file: str) -> Callable[[Env], list[str]]:
    def argv(env: Env) -> list[str]:
        return ["run", "cifar10", "--source", env.url + file, "--checksum", ZERO_PIN, "--until", "download",
                "--artifacts", str(env.root)]

    return argv


def _official_download(env: Env) -> list[str]:
    return ["run", "cifar10", "--until", "download", "--artifacts", str(env.root)]


def _refused_download(env: Env) -> list[str]:
    return ["run", "cifar10", "--source", env.dead_url + "cifar-10-python.tar.gz", "--checksum", ZERO_PIN,
            "--until", "download", "--artifacts", str(env.root)]


def _backbone(make: Callable[[Path], str]) -> Callable[[Env], list[str]]:
    """``tfpipe run images --backbone SPEC --until bottleneck`` over the env's (already shard-ed) photos."""

    def argv(env: Env) -> list[str]:
        return ["run", "images", "--source", str(env.photos), "--until", "bottleneck", "--artifacts", str(env.root),
                "--set", "DecodeImages.image_size=32", "--backbone", make(env.tmp)]

    return argv


def _written(name: str, data: bytes) -> Callable[[Path], str]:
    def make(tmp: Path) -> str:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
        return str(tmp / name)

    return make


def _freeze_dir_without_model(tmp: Path) -> str:
    folder = tmp / "Freeze-abc"
    folder.mkdir()
    (folder / "frozen_graph.json").write_text('{"image_shape": [32, 32, 3], "top_k": 3}')
    return str(folder)


def _empty_dir(tmp: Path) -> str:
    (tmp / "not-a-model").mkdir()
    return str(tmp / "not-a-model")


def _graph_without_tensors(tmp: Path) -> str:
    """A valid frozen GraphDef (one NoOp node) lacking the Inception tensor names tfpipe looks for."""
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    node = graph.node.add()
    node.name, node.op = "lonely", "NoOp"
    path = tmp / "other_graph.pb"
    path.write_bytes(graph.SerializeToString())
    return str(path)


def _predict(make: Callable[[Path], Path]) -> Callable[[Env], list[str]]:
    """``tfpipe predict MODEL good.png BAD``: the good image shows --skip-bad still predicts the others."""

    def argv(env: Env) -> list[str]:
        return ["predict", str(env.model), str(env.good_image), str(make(env.tmp))]

    return argv


def _image_bytes(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    return make


def _truncated_jpeg(tmp: Path) -> Path:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buffer, "JPEG")
    data = buffer.getvalue()
    (tmp / "cut.jpg").write_bytes(data[: len(data) // 2])
    return tmp / "cut.jpg"


def _a_folder(tmp: Path) -> Path:
    (tmp / "album.jpg").mkdir()
    return tmp / "album.jpg"


def _predict_model(make: Callable[[Path], str]) -> Callable[[Env], list[str]]:
    def argv(env: Env) -> list[str]:
        return ["predict", make(env.tmp), str(env.good_image)]

    return argv


def _folder_of_images(tmp: Path) -> str:
    folder = tmp / "just-images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return str(folder)


def _set(assignment: str) -> Callable[[Env], list[str]]:
    def argv(env: Env) -> list[str]:
        return ["run", "captcha", "--source", str(env.captchas), "--until", "decode", "--artifacts", str(env.root),
                "--set", assignment]

    return argv


def _captcha_run(*extra: str) -> Callable[[Env], list[str]]:
    def argv(env: Env) -> list[str]:
        return ["run", "captcha", "--source", str(env.captchas), "--artifacts", str(env.root),
                *[part.format(**env.values()) for part in extra]]

    return argv


def _args(*parts: str) -> Callable[[Env], list[str]]:
    def argv(env: Env) -> list[str]:
        return [part.format(**env.values()) for part in parts]

    return argv


# ---- the catalogue ------------------------------------------------------------------------------------------
DOWNLOADS = [
    BadSurface("download", "http-404", _download("missing.tar.gz"), "DownloadError", "{url}missing.tar.gz",
               r"HTTP 404", code=TASK_FAILED, stage="download"),
    BadSurface("download", "http-500-every-attempt", _download("error.tar.gz"), "DownloadError",
               "{url}error.tar.gz", r"gave up after 4 attempts; last: HTTP 500", code=TASK_FAILED, stage="download"),
    BadSurface("download", "body-shorter-than-declared", _download("short.tar.gz"), "DownloadError",
               "{url}short.tar.gz", rf"gave up after 4 attempts; last: connection closed after {SHORT_BODY} of "
               rf"{DOWNLOAD_ERROR_BODY} bytes", code=TASK_FAILED, stage="download"),
    BadSurface("download", "official-checksum-mismatch", _official_download, "ChecksumError",
               "{url}cifar-10-python.tar.gz", r"checksum mismatch: expected md5:[0-9a-f]{32}, got md5:[0-9a-f]{32}",
               code=TASK_FAILED, stage="download", registry_file="cifar-10-python.tar.gz"),
    BadSurface("download", "connection-refused", _refused_download, "DownloadError",
               "{dead_url}cifar-10-python.tar.gz", r"gave up after 4 attempts; last: .*Connection refused",
               code=TASK_FAILED, stage="download"),
    BadSurface("download", "redirect-to-file-url", _download("redirect.tar.gz"), "DownloadError",
               "{url}redirect.tar.gz", r"HTTP 302 .*Redirection to url 'file:///etc/passwd' is not allowed",
               code=TASK_FAILED, stage="download"),
]

BACKBONES = [
    BadSurface("backbone", "missing-file", _backbone(lambda tmp: str(tmp / "nowhere" / "backbone.keras")), "usage",
               "{tmp}/nowhere/backbone.keras", r"no such file or directory"),
    BadSurface("backbone", "unknown-keras-application", _backbone(lambda tmp: "keras:NoSuchApp"), "usage",
               "keras:NoSuchApp", r"unknown Keras application 'NoSuchApp'.*supported applications: ConvNeXtBase"),
    BadSurface("backbone", "misspelt-keras-application", _backbone(lambda tmp: "keras:InceptionV4"), "usage",
               "keras:InceptionV4", r"did you mean keras:InceptionV3\?"),
    BadSurface("backbone", "freeze-dir-without-model", _backbone(_freeze_dir_without_model), "usage",
               "{tmp}/Freeze-abc", r"tfpipe freeze directory without model\.keras"),
    BadSurface("backbone", "dir-without-freeze-files", _backbone(_empty_dir), "usage", "{tmp}/not-a-model",
               r"directory is neither a tfpipe freeze directory nor a model"),
    BadSurface("backbone", "pb-not-a-graphdef",
               _backbone(_written("backbone.pb", b"<html><body>404 Not Found</body></html>\n")),
               "BackboneError", "{tmp}/backbone.pb", r"not a GraphDef", code=TASK_FAILED, stage="bottleneck",
               fast=False),
    BadSurface("backbone", "graphdef-without-tensor-names", _backbone(_graph_without_tensors), "BackboneError",
               "{tmp}/other_graph.pb", r"no input tensor 'DecodeJpeg/contents:0' \(no node of that name",
               code=TASK_FAILED, stage="bottleneck", fast=False),
    BadSurface("backbone", "keras-file-corrupt", _backbone(_written("model.keras", b"PK\x03\x04 not really a zip")),
               "BackboneError", "{tmp}/model.keras", r"cannot load the Keras model", code=TASK_FAILED,
               stage="bottleneck", fast=False),
]

# Each image case also runs with --skip-bad (see test_bad_inputs.py): the bad file is named, the good one
# predicted, and the exit status is still 2.
PREDICT_IMAGES = [
    BadSurface("predict", "jpeg-truncated", _predict(_truncated_jpeg), "BadImage", "{tmp}/cut.jpg",
               r"truncated JPEG \(no end-of-image marker\)"),
    BadSurface("predict", "html-named-jpg", _predict(_image_bytes("page.jpg", b"<html>404 Not Found</html>")),
               "BadImage", "{tmp}/page.jpg", r"not a decodable image", fast=False),
    BadSurface("predict", "empty-file", _predict(_image_bytes("empty.png", b"")), "BadImage", "{tmp}/empty.png",
               r"empty file \(0 bytes\)"),
    BadSurface("predict", "missing-image", _predict(lambda tmp: tmp / "gone.png"), "BadImage", "{tmp}/gone.png",
               r"cannot read: No such file or directory"),
    BadSurface("predict", "directory-as-image", _predict(_a_folder), "BadImage", "{tmp}/album.jpg",
               r"is a directory, not an image file", fast=False),
]
PREDICT_MODELS = [
    BadSurface("predict", "model-dir-missing", _predict_model(lambda tmp: str(tmp / "no-model")), "usage",
               "{tmp}/no-model", r"not a frozen tfpipe model \(no labels\.txt\)"),
    BadSurface("predict", "model-dir-not-a-model", _predict_model(_folder_of_images), "usage", "{tmp}/just-images",
               r"not a frozen tfpipe model \(no labels\.txt\)"),
]

SETS = [
    BadSurface("set", "misspelt-family", _set("Trian.epochs=3"), "usage", "Trian.epochs=3",
               r"no task family 'Trian'; did you mean 'Train'\?"),
    BadSurface("set", "misspelt-parameter", _set("Train.epoch=3"), "usage", "Train.epoch=3",
               r"Train has no parameter 'epoch'; did you mean 'epochs'\?"),
    BadSurface("set", "value-not-an-int", _set("Train.epochs=many"), "usage", "Train.epochs=many",
               r"not a valid value for Train\.epochs"),
    BadSurface("set", "value-not-a-choice", _set("Train.lr_schedule=linear"), "usage", "Train.lr_schedule=linear",
               r"not a valid value for Train\.lr_schedule: linear is not a valid choice"),
    BadSurface("set", "set-by-the-pipeline", _set("Download.source=/elsewhere"), "usage", "Download.source",
               r"is set by the pipeline"),
    BadSurface("set", "missing-equals", _set("Train.epochs"), "usage", "'Train.epochs'",
               r"--set expects Family\.param=value"),
]

CLI_ARGS = [
    BadSurface("cli", "unknown-dataset", _args("run", "cifar11", "--artifacts", "{root}"), "usage", "'cifar11'",
               r"argument pipeline: invalid choice", argparse=True),
    BadSurface("cli", "unknown-until-stage", _captcha_run("--until", "deploy"), "usage", "'deploy'",
               r"argument --until: invalid choice", argparse=True),
    BadSurface("cli", "checksum-not-hex", _args(
        "run", "cifar10", "--source", "{captchas}/labels.csv", "--checksum", "sha256:xyz", "--until", "download",
        "--artifacts", "{root}"), "ValueError", "'xyz'", r"sha256 digest must be 64 hex digits", code=TASK_FAILED,
        stage="download"),
    BadSurface("cli", "checksum-unknown-algorithm", _args(
        "run", "cifar10", "--source", "{captchas}/labels.csv", "--checksum", "sha1:" + "0" * 40, "--until", "download",
        "--artifacts", "{root}"), "ValueError", "'sha1'", r"unsupported digest algorithm", code=TASK_FAILED,
        stage="download"),
    BadSurface("cli", "checksum-unknown-role", _args("run", "mnist", "--checksum", "pixels=" + ZERO_PIN,
                                                     "--until", "download", "--artifacts", "{root}"),
               "usage", "pixels", r"mnist: no source named pixels; its sources: test_images"),
    BadSurface("cli", "source-path-missing", _args("run", "images", "--source", "{tmp}/no-photos", "--until",
                                                   "decode", "--artifacts", "{root}"),
               "usage", "{tmp}/no-photos", r"does not exist"),
    BadSurface("cli", "cluster-member-of-default-strategy",
               _args("cluster-member", "captcha", "--source", "{captchas}", "--set", "Train.strategy=default",
                     "--artifacts", "{root}", "--timeout", "5"),
               "usage", "Train.strategy=default", r"trains on one host: there is no cluster to join"),
    BadSurface("cli", "history-of-unknown-name", _args("history", "no-such-pipeline", "--artifacts", "{root}"),
               "usage", "no-such-pipeline", r"no recorded runs"),
    # The same, in process with Luigi's RPC retries made instant, so the default suite shows it in a second.
    BadSurface("cli", "scheduler-url-dead-port-no-retry-wait",
               _captcha_run("--until", "decode", "--scheduler-url", "{dead_url}"), "usage", "{dead_url}", r"scheduler",
               luigi_settings=(("core", "rpc-retry-wait", "0"), ("core", "rpc-retry-attempts", "1"))),
    BadSurface("cli", "scheduler-url-dead-port", _captcha_run("--until", "decode", "--scheduler-url", "{dead_url}"),
               "usage", "{dead_url}", r"scheduler", subprocess=True, timeout_s=30, fast=False),
]

BAD_SURFACES: list[BadSurface] = [*DOWNLOADS, *BACKBONES, *PREDICT_IMAGES, *PREDICT_MODELS, *SETS, *CLI_ARGS]

KIND_TITLES = {
    "download": "download over loopback HTTP",
    "backbone": "`--backbone`",
    "predict": "`tfpipe predict` input",
    "set": "`--set` value",
    "cli": "CLI argument",
}


# ---- the docs' table ----------------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def source_row(bad: BadSource) -> str:
    error = f"`{bad.error}` (exit {TASK_FAILED}, stage {bad.stage})"
    note = f" **known bug:** {bad.known_bug}" if bad.known_bug else ""
    return f"| `{bad.id}` | {bad.pipeline} `--source` | {error}{note} | `{_cell(bad.names)}` |"


def surface_row(bad: BadSurface) -> str:
    names = bad.names.format(**Env(Path(), Path()).shown())
    if bad.error == "usage":
        error = f"refused before Luigi starts (exit {bad.code})"
    elif bad.kind == "predict":
        error = f"one `path: reason` line per file (exit {bad.code})"
    else:
        error = f"`{bad.error}` (exit {bad.code}, stage {bad.stage})"
    title = KIND_TITLES[bad.kind] + (" (also with `--skip-bad`)" if bad in PREDICT_IMAGES else "")
    note = f" **known bug:** {bad.known_bug}" if bad.known_bug else ""
    return f"| `{bad.id}` | {title} | {error}{note} | `{_cell(names)}` |"


def markdown_table() -> str:
    lines = ["| case | input kind | error | what the message names |", "|---|---|---|---|",
             *[source_row(bad) for bad in BAD_SOURCES], *[surface_row(bad) for bad in BAD_SURFACES]]
    total = len(BAD_SOURCES) + len(BAD_SURFACES) + len(PREDICT_IMAGES)
    lines.append(f"\n{total} cases ({len(BAD_SOURCES)} sources, {len(BAD_SURFACES)} other inputs, "
                 f"{len(PREDICT_IMAGES)} of them also with `--skip-bad`).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the table of every bad-input case")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown_table())
    else:
        for bad in [*BAD_SOURCES, *BAD_SURFACES]:
            print(bad.id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
