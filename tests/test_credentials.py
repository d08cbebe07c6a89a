"""A credential in a URL never reaches a params log, tag, report or request.

Params are published (git, dvc.lock, MLflow params and tags), so a URL with `user:password@` is refused at
load time with the credential masked; the openai policy's only credential is the Bearer key read from the
variable `label.api_key_env` names, and it reaches the server on the wire.
"""

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from prmflow.config import ConfigError, LabelParams, params_from_dict
from prmflow.labeling.credentials import endpoint_auth
from prmflow.labeling.openai_policy import OpenAIPolicy
from tiny_project import make_project, run

SECRET = "s3cret-pa55"


@pytest.mark.parametrize("raw, where", [
    ({"label": {"policy": "openai", "endpoint": f"http://ana:{SECRET}@127.0.0.1:8000/v1"}}, "label.endpoint"),
    ({"search": {"scorer": f"https://ana:{SECRET}@prm.example/"}}, "search.scorer"),
    ({"base": {"mlflow_tracking_uri": f"http://ana:{SECRET}@mlflow:5000"}}, "base.mlflow_tracking_uri"),
    ({"ingest": {"sources": [{"format": "gsm8k", "hub": f"hf://ana:{SECRET}@x/y"}]}}, "ingest.sources[0].hub"),
    ({"evaluate": {"scorers": [{"name": "a", "path": f"s3://{SECRET}@bucket/m"}]}}, "evaluate.scorers[0].path"),
])
def test_a_credential_in_any_params_url_is_refused_and_never_echoed(raw, where):
    with pytest.raises(ConfigError) as err:
        params_from_dict(raw)
    message = str(err.value)
    assert f"{where}: " in message and "***@" in message and "holds a credential" in message
    assert SECRET not in message


def test_a_url_without_credentials_and_the_key_variable_name_are_fine():
    params = params_from_dict({"label": {"policy": "openai", "endpoint": "http://127.0.0.1:8000/v1",
                                         "api_key_env": "VLLM_API_KEY"}})
    assert params.label.api_key_env == "VLLM_API_KEY"


def test_endpoint_auth_refuses_url_credentials_without_echoing_them(monkeypatch):
    monkeypatch.setenv("PRMFLOW_TEST_KEY", "sk-key")
    with pytest.raises(ValueError) as err:
        endpoint_auth(f"http://ana:{SECRET}@127.0.0.1:8000/v1", "PRMFLOW_TEST_KEY")
    assert "label.endpoint: 'http://***@127.0.0.1:8000/v1' holds a credential" in str(err.value)
    assert SECRET not in str(err.value)
    assert endpoint_auth("http://h:1/v1/", "PRMFLOW_TEST_KEY") == (["http://h:1/v1/completions"],
                                                                  {"Authorization": "Bearer sk-key"})
    assert endpoint_auth("http://h:1/v1", "") == (["http://h:1/v1/completions"], {})


class _Recorder(BaseHTTPRequestHandler):
    """A completions endpoint that answers every request and keeps its Authorization header."""
    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(self.headers.get("Authorization"))
        body = json.dumps({"choices": [{"text": " 8 apples.\n#### 8"}], "usage": {"completion_tokens": 4}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_bearer_key_reaches_the_server_on_the_wire(monkeypatch):
    monkeypatch.setenv("PRMFLOW_TEST_KEY", "sk-wire")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        policy = OpenAIPolicy(LabelParams(endpoint=f"http://127.0.0.1:{server.server_port}/v1",
                                          api_key_env="PRMFLOW_TEST_KEY", max_retries=0, concurrency=8))
        policy.complete({"problem": "Ava has 3 + 5 apples."}, [[]], random.Random(0))
    finally:
        server.shutdown()
        server.server_close()
    assert _Recorder.seen == ["Bearer sk-wire"]


def test_no_file_or_run_of_a_refused_credential_run_holds_it(tmp_path):
    """The label stage with a credential in label.endpoint: refused before any MLflow run, file or request;
    every file under the project (MLflow's database included) is searched for the secret."""
    project = make_project(tmp_path)
    assert run(["prmflow", "ingest"], project).returncode == 0  # the problems the label stage would read
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["label"] |= {"policy": "openai", "endpoint": f"http://ana:{SECRET}@127.0.0.1:9/v1", "max_retries": 0}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run(["prmflow", "label"], project)
    assert proc.returncode == 1
    assert "label.endpoint: 'http://***@127.0.0.1:9/v1' holds a credential" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    proc = run(["dvc", "repro", "label"], project)
    assert proc.returncode != 0
    assert SECRET not in proc.stdout + proc.stderr
    holders = [str(path.relative_to(project)) for path in project.rglob("*") if path.is_file()
               and path.name != "params.yaml" and ".git" not in path.parts and SECRET.encode() in path.read_bytes()]
    assert holders == []
